"""vlm3 on Modal: train, merge, smoke-test, serve and evaluate a recipe where the GPUs are.

Usage:
    vlm3 modal train recipes/e30m3_lora.yaml                                     # check here first, then build, upload, train, merge, smoke test
    modal run modal_entry.py --recipe recipes/e30m3_lora.yaml                    # the same; Modal builds every image before the checks run
    modal run --detach modal_entry.py --recipe recipes/e30m3_lora.yaml           # the same; closing the laptop does not stop it
    modal run modal_entry.py --recipe recipes/e30m3_lora.yaml --max-samples 100  # a train-dev run
    modal run modal_entry.py --run e30m3-lora/20261125T170000Z                   # continue a run: training resumes from its last checkpoint
    modal run modal_entry.py --run e30m3-lora/20261125T170000Z --stage merge     # or smoke, eval, hub
    VLM3_RUN=runs/e30m3-lora/20261125T170000Z modal deploy modal_entry.py::endpoint   # the run's OpenAI-compatible endpoint
    VLM3_RUN=runs/e30m3-lora/20261125T170000Z modal serve modal_entry.py::endpoint    # the same while developing (no snapshot)

Everything Modal (app, images, volumes, secrets) is declared here, and nothing else: each
function opens the run directory on the runs volume and calls the step functions the local CLI
calls (vlm3.train.steps, the vLLM command line of vlm3.serve.vllm, the `vlm3 eval` verb), imported inside
the function bodies so that this file imports without torch, Axolotl or vLLM.

Training's GPU and timeout come from the run's recipe on every call (Function.with_options),
so one deployed app trains any recipe. An endpoint's GPU, scale-down window and concurrency
are fixed when it is deployed: VLM3_RUN names the run it serves, VLM3_RECIPE (optional) the
recipe whose serve section to use instead of the run's own. Each run's endpoint is its own app
(`endpoint`, named by vlm3.cloud.support.endpoint_app_name), so two runs, or two families, serve
side by side; the training app ("vlm3") holds none. The endpoint restores a started, warmed-up,
sleeping vLLM from a Modal memory snapshot (GPU memory included) and wakes it: see
vlm3.cloud.support.prepare_for_snapshot.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import modal

from vlm3.cloud import support as ms
from vlm3.cloud.support import (
    ENDPOINT_KEY_VAR,
    HF_SECRET,
    SECRET_KEYS,
    SERVE_PORT,
    VOLUME_NAMES,
    LaunchError,
)
from vlm3.recipe.schema import Recipe, ServeSpec

PROJECT_ROOT = Path(__file__).resolve().parent
LOCAL_SOURCES = ("vlm3", "data_adapters", "harness")  # our packages, added to every image
MOUNTS = ms.mounts_from_env()

app = modal.App(ms.APP_NAME)

data_volume = modal.Volume.from_name(VOLUME_NAMES["data"], create_if_missing=True)  # pipeline files, images, a local base model
runs_volume = modal.Volume.from_name(VOLUME_NAMES["runs"], create_if_missing=True)  # run directories: checkpoints, adapters, merged models
hf_volume = modal.Volume.from_name(VOLUME_NAMES["hf"], create_if_missing=True)  # Hugging Face cache (the base model) and vLLM's compile cache
VOLUMES = {str(MOUNTS.data): data_volume, str(MOUNTS.runs): runs_volume, str(MOUNTS.hf): hf_volume}

CONTAINER_ENV = {
    "HF_HOME": str(MOUNTS.hf),
    "VLLM_CACHE_ROOT": f"{MOUNTS.hf}/vllm",
    "AXOLOTL_DO_NOT_TRACK": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DEEPEVAL_TELEMETRY_OPT_OUT": "1",
    "PYTHONUNBUFFERED": "1",
}


def secret(name: str) -> modal.Secret:
    """A named Modal Secret, checked for the variable it must hold (an endpoint key secret holds VLLM_API_KEY)."""
    return modal.Secret.from_name(name, required_keys=[SECRET_KEYS.get(name, ENDPOINT_KEY_VAR)])


def secrets_named(names: list[str]) -> list[modal.Secret]:
    return [secret(name) for name in names]


# Axolotl as the local tests run it (requirements-train.txt) plus DeepSpeed, from wheels: minutes to build.
# With VLM3_FLASH_ATTN=1 when the app is created, flash-attn is compiled once (~90 min, bounded memory).
trainer_image = (
    modal.Image.from_registry(ms.TRAINER_BASE_IMAGE, add_python=ms.PYTHON_VERSION)
    .apt_install("git")
    .pip_install(f"torch=={ms.TORCH_VERSION}", f"torchvision=={ms.TORCHVISION_VERSION}", "packaging", "ninja", "wheel", "psutil")
)
if ms.flash_attn_image_enabled():
    trainer_image = trainer_image.pip_install(
        f"flash-attn=={ms.FLASH_ATTN_VERSION}",
        extra_options="--no-build-isolation",  # builds against the torch above
        env=ms.FLASH_ATTN_BUILD_ENV,  # 4 compilers at ~6 GB each; see modal_support.FLASH_ATTN_BUILD_ENV
    )
trainer_image = (
    trainer_image
    .pip_install_from_requirements(str(PROJECT_ROOT / "requirements-train.txt"))
    .pip_install(ms.DEEPSPEED_REQUIREMENT)
    # Axolotl pins an older Modal client; containers run the client Modal mounts, matching yours.
    .run_commands("python -m pip uninstall -y modal")
    .env({**CONTAINER_ENV, ms.FLASH_ATTN_ENV: "1" if ms.flash_attn_image_enabled() else "0"})
    .add_local_python_source(*LOCAL_SOURCES, ignore=ms.PACKAGE_IGNORE)
)

# vLLM with the transformers version that wrote the merged checkpoint.
vllm_image = (
    modal.Image.from_registry(ms.VLLM_BASE_IMAGE, add_python=ms.PYTHON_VERSION)
    .entrypoint([])
    .uv_pip_install(f"vllm=={ms.VLLM_VERSION}", f"transformers=={ms.TRANSFORMERS_VERSION}")
    .env(CONTAINER_ENV)
    .add_local_python_source(*LOCAL_SOURCES, ignore=ms.PACKAGE_IGNORE)
)

# The light environment: the harness and the judge, no torch; its requirements are pyproject.toml's
# (read where the app is created; a container runs the image it was given and needs no list).
LIGHT_REQUIREMENTS = ms.light_requirements(PROJECT_ROOT / "pyproject.toml") if modal.is_local() else []
eval_image = (
    modal.Image.debian_slim(python_version=ms.PYTHON_VERSION)
    .uv_pip_install(*LIGHT_REQUIREMENTS)
    .env(CONTAINER_ENV)
    .add_local_python_source(*LOCAL_SOURCES, ignore=ms.PACKAGE_IGNORE)
)


def commit(volume: modal.Volume) -> None:
    """Make a container's writes visible to later containers (nothing to do when a test runs the body here)."""
    if not modal.is_local():
        volume.commit()


def open_run(run_name: str):
    from vlm3.recipe.runs import RunDir

    ms.run_name_from(run_name)  # rejects anything but <recipe>/<time>
    return RunDir.open(Path(MOUNTS.runs) / run_name)


def base_model_of(run) -> str:
    """The base model the trainer used: a Hub id, or a folder on the data volume."""
    import yaml

    return yaml.safe_load(run.config_file.read_text(encoding="utf-8"))["base_model"]


@app.function(image=trainer_image, volumes=VOLUMES, cpu=1.0, memory=4096, timeout=ms.PIPELINE_TIMEOUT_S, nonpreemptible=True)
def pipeline(run_name: str, stages: list[str], hub_dataset: str = "", hub_model: str = "") -> dict:
    """The run's stages in order, each in its own container. This one waits on a CPU and is never preempted,
    so a detached run goes on without your machine; the GPU containers are retried and resume."""
    from vlm3.train.steps import check_rendered_config
    from vlm3.train.trainer_env import TrainerEnv

    run = open_run(run_name)
    recipe = run.recipe()
    results: dict[str, Any] = {}
    if "validate" in stages:
        check_rendered_config(run, TrainerEnv.current())  # Axolotl's own schema, before any GPU starts
        commit(runs_volume)
        results["validate"] = "ok"
    if "train" in stages:
        options = ms.train_call_options(recipe)
        # Each retry gets a fresh timeout: retry only when this pipeline can still wait for it, merge and smoke-test.
        retries = modal.Retries(max_retries=ms.train_retries(recipe), initial_delay=ms.TRAIN_RETRY_DELAY_S)
        call = train.with_options(**options, retries=retries, secrets=secrets_named(ms.train_secret_names(recipe)))
        results["train"] = call.remote(run_name)
    if "merge" in stages:
        results["merge"] = merge.remote(run_name)
    if "smoke" in stages:
        if recipe.on_cpu:
            results["smoke"] = {"skipped": "a CPU recipe's tiny model is not served with vLLM"}
        else:
            results["smoke"] = smoke_test.with_options(**ms.smoke_call_options(recipe)).remote(run_name)
    if "hub" in stages and (hub_dataset or hub_model):
        if isinstance(results.get("smoke"), dict) and results["smoke"].get("ok") is False:
            results["hub"] = {"skipped": "the smoke test failed; nothing was pushed"}
        else:
            results["hub"] = push_to_hub.remote(run_name, hub_dataset, hub_model)
    return results


@app.function(
    image=trainer_image,
    volumes=VOLUMES,
    secrets=[secret(HF_SECRET)],
    memory=ms.TRAIN_MEMORY_MIB,
    timeout=ms.MODAL_MAX_TIMEOUT_S,  # each call sets the recipe's compute.timeout_hours
    # Preemptions restart by themselves; this covers one crash. The pipeline's call sets ms.train_retries(recipe).
    retries=modal.Retries(max_retries=ms.TRAIN_RETRIES, initial_delay=ms.TRAIN_RETRY_DELAY_S),
)
def train(run_name: str) -> dict:
    """`vlm3.train.steps.train_run` in the run directory on the volume; a restart resumes from the last checkpoint."""
    import shutil

    from vlm3.train import steps
    from vlm3.train.trainer_env import STATUS_PREFIX, TrainerEnv, TrainingLog, status_printer

    run = open_run(run_name)
    if run.stage_done("train"):
        return {"run": run_name, "skipped": "already trained", **run.status()["stages"]["train"]}
    for partial in ms.incomplete_checkpoints(run.output_dir):
        shutil.rmtree(partial)  # cut off by a preemption; Axolotl would try to resume from it

    def commit_all() -> None:
        commit(runs_volume)
        commit(hf_volume)  # the downloaded base model, for the merge and later runs

    # The Modal logs (streamed to `vlm3 modal train`, or `modal app logs`) get the console's status line, as `vlm3 train`
    # prints it without a terminal; Axolotl's whole output goes to RUN/logs/train.log on the volume (its tail on a failure).
    watcher = TrainingLog()
    devices = max(run.recipe().compute.gpu_count, 1)
    print(f"training {run_name}: a status line every few steps here; Axolotl's output in {run_name}/logs/train.log "
          f"on the volume {VOLUME_NAMES['runs']}", flush=True)
    show = status_printer(watcher, lambda line: print(line, flush=True), devices)
    with ms.keep_committing(commit_all, run.output_dir):
        result = steps.train_run(run, TrainerEnv.current(), on_output=show)
    print(f"{STATUS_PREFIX}{watcher.status_line(devices)} (done)", flush=True)
    metrics = result.log.to_dict()
    return {"run": run_name, "steps": metrics["steps"], "first_loss": metrics["first_loss"], "final_loss": metrics["final_loss"]}


@app.function(
    image=trainer_image,
    volumes=VOLUMES,
    secrets=[secret(HF_SECRET)],
    gpu=ms.MERGE_GPU,  # None: the merge and its fp32 check run on the CPU (see modal_support.MERGE_GPU)
    cpu=ms.MERGE_CPU,
    memory=ms.MERGE_MEMORY_MIB,
    timeout=ms.MERGE_TIMEOUT_S,
    retries=modal.Retries(max_retries=ms.MERGE_RETRIES, initial_delay=10.0),
)
def merge(run_name: str) -> dict:
    """`vlm3.train.steps.merge_run` in a CPU container: merge the adapter, then check the merged folder against base + adapter."""
    from vlm3.train import steps
    from vlm3.train.trainer_env import TrainerEnv

    run = open_run(run_name)
    if not run.stage_done("train"):
        raise steps.StepError(f"{run_name} has no finished training (status.json); run `modal run modal_entry.py --run {run_name}`")
    try:
        check = steps.merge_run(run, TrainerEnv.current())
    finally:
        commit(runs_volume)
        commit(hf_volume)
    return {"run": run_name, "ok": check["ok"], "dtype": check.get("dtype"), "max_abs_diff": check.get("max_abs_diff"),
            "max_ulp_error": check.get("max_ulp_error")}


@app.function(image=vllm_image, volumes=VOLUMES, gpu=ServeSpec().gpu, cpu=ms.SERVE_CPU, memory=ms.SERVE_MEMORY_MIB,
              timeout=ms.SMOKE_TIMEOUT_S, retries=ms.SMOKE_RETRIES)  # CPU and memory as the endpoint's: it decodes the pages
def smoke_test(run_name: str) -> dict:
    """Start vLLM exactly as the endpoint will (sleep mode on), refuse a request without the key, warm up, sleep
    and wake as before and after a snapshot, then answer one image question."""
    import json
    import secrets as token_source
    import subprocess

    from harness.generate import image_data_url
    from vlm3.cloud import smoke
    from vlm3.train.trainer_side import first_example
    from vlm3.serve.vllm import images_per_prompt, served_model_dir, sleep_mode_command, vllm_argv, vllm_environ

    run = open_run(run_name)
    recipe = run.recipe()
    argv = vllm_argv(recipe, str(served_model_dir(run.path, recipe)), SERVE_PORT, base_model=base_model_of(run),
                     images=images_per_prompt(run.path))
    key = token_source.token_urlsafe(24)
    argv, env = sleep_mode_command(argv, vllm_environ(os.environ, ENDPOINT_KEY_VAR, key))
    log_path = run.logs_dir / "smoke_vllm.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    images, question = first_example(run.path)
    result: dict[str, Any] = {"run": run_name, "command": argv}
    with log_path.open("ab") as log:
        server = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        result["load_s"] = smoke.wait_healthy(server, LOCAL_ROOT, ms.SERVE_STARTUP_TIMEOUT_S, log_path)
        # What the endpoint does around its snapshot (ms.prepare_for_snapshot, ms.wake_engine): warm up, sleep, wake;
        # then the smoke test proper, on the woken engine: the key guard over every route (sleep mode's development
        # routes /sleep, /wake_up, /collective_rpc ... among them) and one page question.
        warmup = ms.smoke_request(recipe.served_name, [image_data_url(image) for image in images], question,
                                  max_tokens=ms.WARMUP_MAX_TOKENS)
        result["warmup_s"] = [round(s, 2) for s in ms.warm_up(LOCAL_ROOT, key, warmup)]
        result["sleep_s"] = round(ms.sleep_engine(LOCAL_ROOT, key), 2)
        result["wake_s"] = round(ms.wake_engine(LOCAL_ROOT, key), 2)
        result.update(smoke.probe_server(LOCAL_ROOT, key, recipe.served_name, [image_data_url(p) for p in images], question))
    except Exception as exc:  # noqa: BLE001 - the smoke test reports every failure as its result
        result.update(ok=False, error=str(exc))
    finally:
        smoke.stop(server)
        (run.path / "smoke_test.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        run.mark_stage("smoke", "done" if result.get("ok") else "failed")
        commit(runs_volume)
    return result


@app.function(image=eval_image, volumes={str(MOUNTS.data): data_volume, str(MOUNTS.runs): runs_volume}, cpu=2.0, memory=4096,
              timeout=ms.EVAL_TIMEOUT_S)
def evaluate(run_name: str, endpoint: str, label: str = "endpoint", only: str = "all", max_samples: int = 0) -> dict:
    """`vlm3 eval RUN --endpoint URL` in the cloud: the same verb, writing the same files under RUN/eval/<endpoint>/LABEL."""
    from vlm3.cli.main import main as vlm3_main
    from vlm3.cli.evaluate import endpoint_folder

    run = open_run(run_name)
    os.chdir(MOUNTS.data)  # recipes name data relative to the project root; the data volume mirrors that layout
    os.environ.setdefault("VLM3_API_KEY", os.environ.get(ENDPOINT_KEY_VAR, ""))
    argv = ["eval", str(run.path), "--endpoint", endpoint, "--label", label, "--only", only]
    if max_samples:
        argv += ["--max-samples", str(max_samples)]
    try:
        code = vlm3_main(argv)
    finally:
        commit(runs_volume)
    return {"run": run_name, "exit_code": code, "eval_dir": f"{run_name}/eval/{endpoint_folder(endpoint)}/{label}"}


@app.function(image=trainer_image, volumes=VOLUMES, secrets=[secret(HF_SECRET)], cpu=2.0, memory=8192, timeout=ms.HUB_TIMEOUT_S,
              retries=2)
def push_to_hub(run_name: str, dataset_repo: str = "", model_repo: str = "") -> dict:
    """The pipeline files and images, and the served model, to private Hub repositories."""
    import json

    from huggingface_hub import HfApi

    from vlm3.serve.vllm import served_model_dir

    run = open_run(run_name)
    recipe = run.recipe()
    api = HfApi(token=os.environ[SECRET_KEYS[HF_SECRET]])
    pushed: dict[str, str] = {}
    if dataset_repo:
        data_root = Path(MOUNTS.data)  # the data volume mirrors the project's layout
        files = ms.data_files(recipe, cwd=data_root)
        if (data_root / recipe.model.base).is_dir():  # a local base model is not part of the dataset
            base_key = ms.volume_key(recipe.model.base, data_root)
            files = {key: path for key, path in files.items() if not key.startswith(f"{base_key}/")}
        api.create_repo(dataset_repo, repo_type="dataset", private=True, exist_ok=True)
        api.upload_folder(repo_id=dataset_repo, repo_type="dataset", folder_path=str(MOUNTS.data), allow_patterns=sorted(files),
                          commit_message=f"vlm3: data of {run_name}")
        pushed["dataset"] = f"https://huggingface.co/datasets/{dataset_repo}"
    if model_repo:
        model_dir = served_model_dir(run.path, recipe)
        api.create_repo(model_repo, repo_type="model", private=True, exist_ok=True)
        api.upload_folder(repo_id=model_repo, folder_path=str(model_dir), ignore_patterns=["checkpoint-*", "merged/*"],
                          commit_message=f"vlm3: {run_name}")
        pushed["model"] = f"https://huggingface.co/{model_repo}"
    (run.path / "hub.json").write_text(json.dumps(pushed, indent=2) + "\n", encoding="utf-8")
    commit(runs_volume)
    return pushed


LOCAL_ROOT = f"http://127.0.0.1:{SERVE_PORT}"  # vLLM inside its container, as the hooks and the smoke test reach it


def deploy_reference() -> str:
    """What `modal deploy` was given (FILE or FILE::APP), read from its click context; "" outside it."""
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except ImportError:
        return ""
    return str((ctx.params or {}).get("app_ref") or "") if ctx is not None else ""


SERVE_TARGET = ms.serve_target_from_env()

if SERVE_TARGET is not None:
    SERVE_SPEC = SERVE_TARGET.spec
    # One app per run (ms.endpoint_app_name): deploying another run adds its endpoint beside this one.
    endpoint = modal.App(ms.endpoint_app_name(SERVE_TARGET.run))

    @endpoint.cls(
        image=vllm_image,
        volumes=VOLUMES,
        secrets=[secret(SERVE_SPEC.api_key_secret)],
        env={ms.SERVE_TARGET_ENV: SERVE_TARGET.to_env()},  # the serving container declares the same class
        enable_memory_snapshot=True,  # `modal deploy` only: later containers restore a started, sleeping vLLM
        experimental_options={"enable_gpu_snapshot": True},  # the card's memory too (a Modal alpha feature)
        **ms.serve_function_options(SERVE_TARGET),
    )
    @modal.concurrent(max_inputs=SERVE_SPEC.concurrent_inputs)
    class Endpoint:
        """vLLM's OpenAI-compatible server for the deployed run; requests need the key in the endpoint secret."""

        @modal.enter(snap=True)
        def start(self) -> None:
            """Before the snapshot: start vLLM, wait for it, warm it up with the run's own questions, sleep."""
            self.server, self.key = start_server(SERVE_TARGET)
            timings = ms.prepare_for_snapshot(LOCAL_ROOT, self.key, self.server, warmup_request(SERVE_TARGET),
                                              log="the container's log")
            print(f"vLLM started, warmed up and asleep for the snapshot: {timings}", flush=True)

        @modal.enter(snap=False)
        def wake(self) -> None:
            """After each restore (and after start when there is no snapshot): wake the engine."""
            print(f"vLLM awake in {ms.wake_engine(LOCAL_ROOT, self.key):.1f} s", flush=True)

        @modal.web_server(port=SERVE_PORT, startup_timeout=ms.SERVE_STARTUP_TIMEOUT_S)
        def serve(self) -> None:
            """The web endpoint: vLLM already listens on SERVE_PORT (started in `start`)."""

        @modal.exit()
        def stop(self) -> None:
            if getattr(self, "server", None) is not None:
                stop_server(self.server)

    if modal.is_local():
        serve = Endpoint().serve  # the web method: its URL once deployed
        from vlm3.serve.ask import deploy_command_running, print_deployed_endpoint

        if deploy_command_running():
            import atexit

            # Modal builds and deploys after this file is imported; at exit the web function has its URL.
            atexit.register(print_deployed_endpoint, serve, SERVE_SPEC.served_model_name or SERVE_TARGET.run.split("/")[0],
                            SERVE_SPEC.api_key_secret, SERVE_SPEC.scaledown_window_s)
            deployed = ms.deploy_target(deploy_reference())
            if deployed != ms.ENDPOINT_APP_VAR:
                print(f"note: VLM3_RUN names a run, but this deploys the app {deployed!r}, not its endpoint; deploy the "
                      f"endpoint with `{ms.deploy_command(SERVE_TARGET.run)}`", file=sys.stderr)


def start_server(target: ms.ServeTarget):
    """Start the endpoint's vLLM (sleep mode on, the key from the secret in its environment); (process, key)."""
    import subprocess

    from vlm3.serve.vllm import sleep_mode_command, vllm_environ

    argv = serve_argv(target)  # refuses to start without the key
    key = os.environ[ENDPOINT_KEY_VAR]
    argv, env = sleep_mode_command(argv, vllm_environ(os.environ, ENDPOINT_KEY_VAR, key))
    return subprocess.Popen(argv, env=env, start_new_session=True), key  # its own process group: stop_server ends all of it


def stop_server(server) -> None:
    from vlm3.cloud import smoke

    smoke.stop(server)  # SIGTERM to vLLM's process group (its engine runs in child processes), SIGKILL after a grace period


def warmup_request(target: ms.ServeTarget) -> dict:
    """The warm-up question: the run's first training example, pages included, as the smoke test asks it."""
    from harness.generate import image_data_url
    from vlm3.train.trainer_side import first_example

    run = open_run(target.run)
    recipe = ms.recipe_for_serving(run.recipe(), target)
    images, question = first_example(run.path)
    return ms.smoke_request(recipe.served_name, [image_data_url(image) for image in images], question,
                            max_tokens=ms.WARMUP_MAX_TOKENS)


def serve_argv(target: ms.ServeTarget) -> list[str]:
    from vlm3.serve.vllm import images_per_prompt, served_model_dir, vllm_argv

    if not os.environ.get(ENDPOINT_KEY_VAR):
        raise RuntimeError(f"the secret {target.spec.api_key_secret!r} holds no {ENDPOINT_KEY_VAR}: refusing to serve without a key")
    run = open_run(target.run)
    recipe = ms.recipe_for_serving(run.recipe(), target)
    model_dir = served_model_dir(run.path, recipe)
    if not (model_dir / ("adapter_config.json" if recipe.serve.serve_adapter else "config.json")).exists():
        raise RuntimeError(f"{model_dir} holds no model: run `modal run modal_entry.py --run {target.run} --stage merge` first")
    return vllm_argv(recipe, str(model_dir), SERVE_PORT, base_model=base_model_of(run), images=images_per_prompt(run.path))


@dataclass
class Cloud:
    """What the local entrypoint does on Modal; tests hand in a fake to check everything before it."""

    data_volume: Any
    runs_volume: Any

    def start_pipeline(self, run_name: str, stages: tuple[str, ...], hub_dataset: str, hub_model: str) -> dict:
        return pipeline.remote(run_name, list(stages), hub_dataset, hub_model)

    def start_eval(self, recipe: Recipe, run_name: str, endpoint: str, label: str, max_samples: int) -> dict:
        call = evaluate.with_options(secrets=secrets_named(ms.eval_secret_names(recipe)))
        return call.remote(run_name, endpoint, label, "all", max_samples)

    def start_hub(self, run_name: str, dataset_repo: str, model_repo: str) -> dict:
        return push_to_hub.remote(run_name, dataset_repo, model_repo)

    def endpoint(self, run_name: str) -> str:
        """The OpenAI base URL of the run's own deployed endpoint (its app: ms.endpoint_app_name)."""
        app_name = ms.endpoint_app_name(run_name)
        try:
            url = getattr(modal.Cls.from_name(app_name, ms.ENDPOINT_CLASS)(), ms.ENDPOINT_METHOD).get_web_url()
        except modal.exception.NotFoundError:
            url = None
        if not url:
            raise LaunchError([f"{run_name} has no deployed endpoint (no app {app_name}): deploy it with "
                               f"`{ms.deploy_command(run_name)}`, or pass --endpoint URL"])
        return ms.endpoint_url(url)


def check_and_prepare(recipe_path: str, max_samples: int, out: Callable[[str], None], runs_root: Path) -> tuple[Any, Recipe]:
    """Check the recipe, the Modal specifics and the data here, and write the run (vlm3.train.steps.prepare_run).

    Touches nothing of Modal: `vlm3 modal train` calls it before it creates the app.
    """
    from vlm3.recipe.schema import load_recipe
    from vlm3.train.steps import prepare_run

    recipe = load_recipe(recipe_path, overrides={"data.max_samples": max_samples} if max_samples else None)
    errors, notes = ms.launch_problems(recipe)
    if errors:
        raise LaunchError(errors, f"{recipe_path} cannot run on Modal")
    for note in notes:
        out(f"note: {note}")
    image_dir = f"{MOUNTS.data}/{ms.volume_key(recipe.data.images_root)}"  # the image paths the trainer will see
    base_model = f"{MOUNTS.data}/{ms.volume_key(recipe.model.base)}" if Path(recipe.model.base).is_dir() else recipe.model.base
    run = prepare_run(recipe, root=runs_root, image_dir=image_dir, base_model=base_model)
    report = run.status()["stages"]["prepare"]
    out(f"run {recipe.name}/{run.path.name}: {report['train_rows']} train / {report['val_rows']} val rows checked and converted ({run.path})")
    return run, recipe


def upload_prepared(run, recipe: Recipe, cloud: Cloud, out: Callable[[str], None]) -> str:
    """Upload what changed of the data, then the prepared run; returns the run's name on the volume."""
    run_name = f"{recipe.name}/{run.path.name}"
    plan = ms.sync_files(cloud.data_volume, ms.data_files(recipe))
    out(f"volume {VOLUME_NAMES['data']}: uploaded {len(plan.upload)} file(s), {plan.upload_bytes / 1e6:.1f} MB; "
        f"{len(plan.unchanged)} unchanged (same sha256)")
    ms.upload_run(cloud.runs_volume, run.path, run_name)
    out(f"volume {VOLUME_NAMES['runs']}: {run_name}/ (recipe, converted data, Axolotl config)")
    return run_name


def prepare_and_upload(recipe_path: str, max_samples: int, cloud: Cloud, out: Callable[[str], None], runs_root: Path) -> tuple[str, Recipe]:
    """Check the recipe and the data here, write the run, upload what changed."""
    run, recipe = check_and_prepare(recipe_path, max_samples, out, runs_root)
    return upload_prepared(run, recipe, cloud, out), recipe


def exit_code_for(exc: Exception, out: Callable[[str], None]) -> int | None:
    """A user's mistake as a printed paragraph and an exit status; None for anything else (a bug: traceback)."""
    from data_adapters.pipeline import DataError
    from vlm3.recipe.schema import RecipeError
    from vlm3.train.steps import StepError

    if isinstance(exc, RecipeError):
        out(str(exc))
        return 2
    if isinstance(exc, LaunchError):
        out(f"Error: {exc}\nNothing was uploaded or started.")
        return 2
    if isinstance(exc, DataError):
        out(f"Error: {exc}\nNothing was uploaded or started; your files were not changed.")
        return 1
    if isinstance(exc, StepError):
        out(f"Error: {exc}")
        return 1
    return None


def recipe_of_run(run_name: str, cloud: Cloud, runs_root: Path) -> Recipe:
    """The run's own recipe: the local copy if this machine launched it, else the one on the volume."""
    import yaml

    from vlm3.recipe.schema import parse_recipe

    local = runs_root / run_name / "recipe.yaml"
    if local.is_file():
        text = local.read_text(encoding="utf-8")
    else:
        try:
            text = b"".join(cloud.runs_volume.read_file(f"{run_name}/recipe.yaml")).decode("utf-8")
        except FileNotFoundError:
            raise LaunchError([f"no run {run_name} on the volume {VOLUME_NAMES['runs']} (see `modal volume ls {VOLUME_NAMES['runs']}`)"],
                              "unknown run") from None
    return parse_recipe(yaml.safe_load(text), local)


def launch(
    recipe: str = "",
    run: str = "",
    stage: str = "all",
    max_samples: int = 0,
    endpoint: str = "",
    label: str = "endpoint",
    hub_dataset: str = "",
    hub_model: str = "",
    cloud: Cloud | None = None,
    out: Callable[[str], None] = print,
    runs_root: Path = Path("runs"),
    prepared: tuple[Any, Recipe] | None = None,
) -> int:
    """The local entrypoint's work; returns the exit status. Nothing reaches Modal until the recipe and data pass.

    `prepared` is check_and_prepare's result when the caller (vlm3 modal train) checked before creating the app.
    """
    cloud = cloud or Cloud(data_volume, runs_volume)
    try:
        stages = ms.stages_for(stage)
        if bool(recipe) == bool(run):
            raise LaunchError(["pass --recipe recipes/<name>.yaml to start a run, or --run <recipe>/<time> to continue one"], "nothing to run")
        if recipe and stage not in ("all", "train"):
            raise LaunchError([f"--stage {stage} acts on a trained run: pass --run <recipe>/<time>"], "nothing to run")
        if recipe:
            prepared_run, parsed = prepared or check_and_prepare(recipe, max_samples, out, runs_root)
            run_name = upload_prepared(prepared_run, parsed, cloud, out)
            for line in ms.cost_lines(parsed):
                out(line)
            fit = ms.serve_fit(parsed)
            if fit:
                out(f"serving estimate: {fit}")
        else:
            run_name = ms.run_name_from(run, runs_root)
            parsed = recipe_of_run(run_name, cloud, runs_root)
        dataset_repo, model_repo = ms.hub_targets(parsed, hub_dataset, hub_model)
        if stage == "eval":
            url = endpoint or cloud.endpoint(run_name)
            out(f"evaluating {run_name} against {url} ...")
            result = cloud.start_eval(parsed, run_name, url, label, max_samples)
            out(f"exit {result['exit_code']}: results on the volume {VOLUME_NAMES['runs']} at {result['eval_dir']}/")
            out(f"next: modal volume get {VOLUME_NAMES['runs']} {result['eval_dir']} runs/{run_name}/eval/")
            return result["exit_code"]
        if stage == "hub":
            if not (dataset_repo or model_repo):
                raise LaunchError(["pass --hub-dataset you/name and/or --hub-model you/name (or name them in the recipe)"], "nothing to push")
            for kind, url in cloud.start_hub(run_name, dataset_repo or "", model_repo or "").items():
                out(f"pushed {kind}: {url}")
            return 0
        if dataset_repo or model_repo:
            stages = (*stages, "hub")
        out(f"stages: {', '.join(stages)} (run {run_name}; logs: the Modal dashboard or `modal app logs {ms.APP_NAME}`)")
        out("then:\n" + ms.describe(ms.next_commands(run_name, parsed)))
        results = cloud.start_pipeline(run_name, stages, dataset_repo or "", model_repo or "")
        for name, result in results.items():
            out(f"{name}: {result}")
        smoke = results.get("smoke")
        if isinstance(smoke, dict) and smoke.get("ok") is False:
            out(f"the smoke test failed: {smoke.get('error', smoke)}; see {run_name}/logs/smoke_vllm.log on {VOLUME_NAMES['runs']}")
            return 1
        out(f"next: {ms.deploy_command(run_name)}")
        return 0
    except Exception as exc:
        code = exit_code_for(exc, out)
        if code is None:
            raise
        return code


def check_before_creating(recipe: str, max_samples: int, out: Callable[[str], None] = print,
                          runs_root: Path = Path("runs")) -> tuple[int, tuple[Any, Recipe] | None]:
    """check_and_prepare with launch's exit statuses: (0, prepared) or (status, None). Creates no Modal object."""
    try:
        return 0, check_and_prepare(recipe, max_samples, out, runs_root)
    except Exception as exc:
        code = exit_code_for(exc, out)
        if code is None:
            raise
        return code, None


@app.local_entrypoint()
def main(
    recipe: str = "",
    run: str = "",
    stage: str = "all",
    max_samples: int = 0,
    endpoint: str = "",
    label: str = "endpoint",
    hub_dataset: str = "",
    hub_model: str = "",
) -> None:
    code = launch(recipe=recipe, run=run, stage=stage, max_samples=max_samples, endpoint=endpoint, label=label,
                  hub_dataset=hub_dataset, hub_model=hub_model)
    if code:
        if recipe and code == 2:
            print(f"(`modal run` built this app's images before these checks ran; `vlm3 modal train {recipe}` checks first.)")
        sys.exit(code)
