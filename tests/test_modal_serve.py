"""The Modal endpoint: one app per run (side by side), memory snapshots with vLLM asleep inside them.

Usage:
    .venv/bin/python -m pytest -q tests/test_modal_serve.py

No account and no network: the app is declared here and read back (the decorators' arguments are
recorded), and the enter hooks' logic (vlm3.cloud.support.prepare_for_snapshot, wake_engine) runs
against a loopback stand-in for vLLM that answers its health, chat and sleep routes behind the key,
as vLLM with `--middleware vlm3.serve.guard.KeyGuard` and VLLM_SERVER_DEV_MODE=1 does. The real
CPU server is in tests/test_modal_serve_vllm_cpu.py (`make test-vllm`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.conftest import ROOT
from tests.test_modal import load_entry, secret_names
from vlm3.cloud import support as ms
from vlm3.recipe.schema import load_recipe
from vlm3.serve.vllm import SLEEP_MODE_ENV, SLEEP_MODE_FLAG, sleep_mode_command, vllm_argv

RUN_A = "e30m3-lora/20261125T170000Z"
RUN_B = "e30m3-qwen3vl-lora/20261202T090000Z"


# One app per run


@pytest.mark.parametrize("run, expected", [
    (RUN_A, "vlm3-e30m3-lora-20261125t170000z-"),
    (RUN_B, "vlm3-e30m3-qwen3vl-lora-20261202t090000z-"),
    ("tiny-cpu-demo/20261125T170000Z-2", "vlm3-tiny-cpu-demo-20261125t170000z-2-"),
    ("e30m3_lora.v2/20261125T170000Z", "vlm3-e30m3-lora-v2-20261125t170000z-"),
    ("a-recipe-name-far-longer-than-any-shipped-one/20261125T170000Z", "vlm3-a-recipe-name-far-l-20261125t170000z-"),
])
def test_each_run_gets_its_own_app_name_within_modals_rules(run, expected):
    from modal._utils.name_utils import is_valid_object_name, is_valid_subdomain_label

    name = ms.endpoint_app_name(run)
    assert name.startswith(expected) and len(name) == len(expected) + ms.RUN_HASH_CHARS
    assert len(name) <= ms.ENDPOINT_APP_NAME_MAX
    assert is_valid_object_name(name), "Modal's rule for app names"
    assert is_valid_subdomain_label(name), "lowercase letters, digits and dashes: the URL keeps it as it is"
    assert ms.endpoint_app_name(run) == name, "the same run always names the same app"


def test_runs_that_slug_alike_get_different_apps():
    alike = ["e30m3-lora/20261125T170000Z", "e30m3_lora/20261125T170000Z", "e30m3.lora/20261125T170000Z",
             "e30m3-lora-20261125t170000z/x", "e30m3-lora/20261125T170000Z-2"]
    names = [ms.endpoint_app_name(run) for run in alike]
    assert len(set(names)) == len(alike), names


@pytest.mark.parametrize("run", ["e30m3-lora", "../x/y", "a/b/c", "E30M3/x", ""])
def test_an_app_name_is_only_made_for_a_run_name(run):
    with pytest.raises(ms.LaunchError):
        ms.endpoint_app_name(run)


def test_the_deploy_command_names_the_endpoint_app():
    assert ms.deploy_command(RUN_A) == f"VLM3_RUN=runs/{RUN_A} modal deploy modal_entry.py::endpoint"
    assert ms.deploy_target("modal_entry.py::endpoint") == ms.ENDPOINT_APP_VAR
    assert ms.deploy_target("modal_entry.py") == "app"  # Modal's default variable: the training app
    assert any(ms.deploy_command(RUN_A) in line for line in ms.next_commands(RUN_A, load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")))


def pristine() -> dict:
    import modal

    return {"cls": modal.App.cls, "concurrent": modal.concurrent, "web_server": modal.web_server, "enter": modal.enter}


PRISTINE = pristine()  # Modal's own decorators, wrapped afresh by each declared() call


def declared(monkeypatch, **env: str) -> tuple[object, dict]:
    """modal_entry imported with the endpoint's decorator arguments recorded: App.cls, concurrent, web_server, enter."""
    import modal

    seen: dict = {"cls": [], "concurrent": [], "web_server": [], "enter": []}
    originals = {name: PRISTINE[name] for name in ("concurrent", "web_server", "enter")}
    original_cls = PRISTINE["cls"]

    def recording_cls(self, *args, **kwargs):
        seen["cls"].append((self.name, kwargs))
        return original_cls(self, *args, **kwargs)

    def recorder(name):
        def record(*args, **kwargs):
            seen[name].append(kwargs)
            return originals[name](*args, **kwargs)
        return record

    monkeypatch.setattr(modal.App, "cls", recording_cls)
    for name in originals:
        monkeypatch.setattr(modal, name, recorder(name))
    return load_entry(monkeypatch, **env), seen


def recipe_file(tmp_path, source: str, **serve) -> str:
    raw = yaml.safe_load((ROOT / "recipes" / source).read_text())
    raw["serve"].update(serve)
    path = tmp_path / f"{source}.serve.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_two_runs_deploy_two_apps_each_with_its_own_endpoint(monkeypatch, tmp_path):
    """Deploying run B declares B's app; A's app (another name) is untouched: two families serve at once."""
    entry_a, seen_a = declared(monkeypatch, VLM3_RUN=f"runs/{RUN_A}", VLM3_RECIPE=recipe_file(tmp_path, "e30m3_lora.yaml"))
    entry_b, seen_b = declared(monkeypatch, VLM3_RUN=f"runs/{RUN_B}",
                               VLM3_RECIPE=recipe_file(tmp_path, "e30m3_qwen3vl_lora.yaml", gpu="L40S", scaledown_window_s=120))
    assert entry_a.endpoint.name == ms.endpoint_app_name(RUN_A) != entry_b.endpoint.name == ms.endpoint_app_name(RUN_B)
    assert entry_a.app.name == entry_b.app.name == ms.APP_NAME, "the training app is one, and holds no endpoint"
    [(app_a, options_a)] = seen_a["cls"]
    [(app_b, options_b)] = seen_b["cls"]
    assert (app_a, app_b) == (entry_a.endpoint.name, entry_b.endpoint.name)
    assert (options_a["gpu"], options_b["gpu"]) == ("A10G", "L40S") and options_b["scaledown_window"] == 120
    # The serving container re-declares its own run's class from the JSON it is handed.
    assert ms.ServeTarget.from_env(options_b["env"][ms.SERVE_TARGET_ENV]).run == RUN_B


def test_no_endpoint_app_without_a_run(monkeypatch):
    entry, seen = declared(monkeypatch)
    assert not hasattr(entry, "endpoint") and not hasattr(entry, "Endpoint") and seen["cls"] == []


def test_the_endpoint_snapshots_memory_and_gpu_and_keeps_the_recipes_settings(monkeypatch, tmp_path):
    path = recipe_file(tmp_path, "e30m3_lora.yaml", concurrent_inputs=8, api_key_secret="my-endpoint-key")
    entry, seen = declared(monkeypatch, VLM3_RUN=f"runs/{RUN_A}", VLM3_RECIPE=path)
    [(_, options)] = seen["cls"]
    assert options["enable_memory_snapshot"] is True
    assert options["experimental_options"] == {"enable_gpu_snapshot": True}
    target = entry.SERVE_TARGET
    for key, value in ms.serve_function_options(target).items():
        assert options[key] == value, key
    assert options["cpu"] == ms.SERVE_CPU and options["memory"] == ms.SERVE_MEMORY_MIB
    assert options["image"] is entry.vllm_image and set(options["volumes"]) == {"/vol/data", "/vol/runs", "/vol/hf"}
    assert secret_names(entry.Endpoint._get_class_service_function()) == ["my-endpoint-key"]
    assert seen["concurrent"] == [{"max_inputs": 8}]
    assert seen["web_server"] == [{"port": ms.SERVE_PORT, "startup_timeout": ms.SERVE_STARTUP_TIMEOUT_S}]
    assert seen["enter"] == [{"snap": True}, {"snap": False}], "start, warm up and sleep before the snapshot; wake after"
    service = entry.Endpoint._get_class_service_function()._spec_
    assert (service.gpus, service.cpu, service.memory) == ("A10G", ms.SERVE_CPU, ms.SERVE_MEMORY_MIB)
    assert entry.serve.__class__.__name__ in ("Function", "Method"), "the web method, for the deploy banner"


# The command: vllm_argv's, with sleep mode in one named place


def test_the_endpoint_command_is_vllm_argv_plus_sleep_mode():
    recipe = load_recipe(ROOT / "recipes" / "e30m3_lora.yaml")
    argv = vllm_argv(recipe, "/m")
    served, env = sleep_mode_command(argv, {"VLLM_API_KEY": "k", "PATH": "/bin"})
    assert served == [*argv, SLEEP_MODE_FLAG] and SLEEP_MODE_FLAG not in argv
    assert env == {"VLLM_API_KEY": "k", "PATH": "/bin", **SLEEP_MODE_ENV} and env["VLLM_SERVER_DEV_MODE"] == "1"
    assert sleep_mode_command(served, env)[0] == served, "applied twice, the flag is still there once"
    with pytest.raises(ValueError):
        sleep_mode_command(["python", "-m", "x"], {})


def test_the_endpoint_and_the_smoke_test_start_vllm_the_same_way():
    """Both build the command with vllm_argv, then sleep_mode_command: the smoke test checks what the endpoint runs."""
    source = (ROOT / "modal_entry.py").read_text()
    smoke = source[source.index("def smoke_test("):source.index("@app.function(image=eval_image")]
    start = source[source.index("def start_server("):source.index("def stop_server(")]
    for body in (smoke, start):
        assert "vllm_argv(" in body or "serve_argv(" in body
        assert "sleep_mode_command(" in body
    assert "ms.sleep_engine(" in smoke and "ms.wake_engine(" in smoke, "the smoke test sleeps and wakes the engine too"


# The enter hooks against a loopback stand-in for vLLM

FAKE_VLLM = r"""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

port, key, ready_after, mode = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
if mode == "exit":
    sys.exit(3)
time.sleep(ready_after)  # vLLM listens only once the engine is up
state = {"asleep": False, "calls": []}
lock = threading.Lock()

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def route(self, method):
        url = urlsplit(self.path)
        if method == "POST":
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:
            state["calls"].append(f"{method} {self.path}")
        if url.path == "/health":
            return self.reply(200, {})
        if self.headers.get("Authorization") != f"Bearer {key}":  # KeyGuard: every route but /health
            return self.reply(401, {"error": "Unauthorized"})
        if url.path == "/calls":
            return self.reply(200, state["calls"])
        if url.path == "/v1/chat/completions" and method == "POST":
            if state["asleep"]:
                return self.reply(503, {"error": "asleep"})  # vLLM would hold it until woken
            return self.reply(200, {"choices": [{"message": {"content": "10 Nm"}}]})
        if mode == "no-dev" and url.path in ("/sleep", "/wake_up", "/is_sleeping"):
            return self.reply(404, {"detail": "Not Found"})
        if url.path == "/sleep" and method == "POST":
            level = parse_qs(url.query).get("level", ["1"])[0]
            if level not in ("0", "1", "2"):
                return self.reply(422, {"detail": "level"})
            state["asleep"] = mode != "insomniac"
            return self.reply(200, {"status": "sleeping", "level": int(level)})
        if url.path == "/wake_up" and method == "POST":
            state["asleep"] = state["asleep"] and mode == "stuck"
            return self.reply(200, {"status": "awake", "tags": None})
        if url.path == "/is_sleeping":
            return self.reply(200, {"is_sleeping": state["asleep"]})
        return self.reply(404, {"detail": "Not Found"})

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

KEY = "k-loopback"
REQUEST = ms.smoke_request("e30m3", ["data:image/png;base64,AAAA"], "What is the torque?", max_tokens=ms.WARMUP_MAX_TOKENS)


@pytest.fixture
def fake_vllm(tmp_path):
    """Start the stand-in as the endpoint starts vLLM (a process on a loopback port); yields a starter."""
    from tests.test_vllm_cpu import free_port

    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE_VLLM)
    started: list[subprocess.Popen] = []

    def start(mode: str = "normal", ready_after: float = 0.3) -> tuple[subprocess.Popen, str]:
        port = free_port()
        proc = subprocess.Popen([sys.executable, str(script), str(port), KEY, str(ready_after), mode],
                                start_new_session=True)  # as start_server starts vLLM: its own process group
        started.append(proc)
        return proc, f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.terminate()
        proc.wait(timeout=10)


def calls(root: str) -> list[str]:
    return [c for c in httpx.get(f"{root}/calls", headers=ms.bearer(KEY)).json() if not c.startswith("GET /health")][:-1]


def test_before_the_snapshot_vllm_is_started_warmed_and_asleep_then_woken_after(fake_vllm):
    proc, root = fake_vllm()
    timings = ms.prepare_for_snapshot(root, KEY, proc, REQUEST)
    assert set(timings) == {"load_s", "warmup_s", "sleep_s"} and len(timings["warmup_s"]) == ms.WARMUP_ROUNDS
    assert calls(root) == ["POST /v1/chat/completions"] * ms.WARMUP_ROUNDS + [f"POST /sleep?level={ms.SLEEP_LEVEL}", "GET /is_sleeping"]
    assert ms.engine_sleeping(root, KEY)
    assert ms.wake_engine(root, KEY) >= 0
    assert not ms.engine_sleeping(root, KEY)
    assert httpx.post(f"{root}/v1/chat/completions", json=REQUEST, headers=ms.bearer(KEY)).status_code == 200


def test_the_hooks_send_the_key_on_every_route(fake_vllm):
    proc, root = fake_vllm()
    with pytest.raises(ms.ServeError, match="warm-up: POST /v1/chat/completions answered 401"):
        ms.prepare_for_snapshot(root, "wrong-key", proc, REQUEST)
    with pytest.raises(ms.ServeError, match="sleep: POST /sleep.level=1 answered 401"):
        ms.sleep_engine(root, "wrong-key")
    with pytest.raises(ms.ServeError, match="GET /is_sleeping answered 401"):
        ms.engine_sleeping(root, "wrong-key")


@pytest.mark.parametrize("mode, message", [
    ("exit", "vLLM exited with 3 before it was ready; see the log"),
    ("no-dev", r"sleep: POST /sleep\?level=1 answered 404 \(vLLM serves its sleep routes only with VLLM_SERVER_DEV_MODE=1\)"),
    ("insomniac", "sleep: POST /sleep.level=1 answered 200 but /is_sleeping says the engine is awake"),
    ("stuck", "wake: the engine still sleeps 1 s after POST /wake_up"),
])
def test_each_failure_is_one_sentence_naming_the_step(fake_vllm, mode, message):
    proc, root = fake_vllm(mode)
    with pytest.raises(ms.ServeError, match=message):  # start, sleep, wake: the first step that fails says so
        ms.wait_until_healthy(root, proc, timeout_s=30, log="the log", poll_s=0.1)
        ms.sleep_engine(root, KEY)
        ms.wake_engine(root, KEY, timeout_s=1, poll_s=0.1)


def test_a_server_that_never_answers_health_times_out(fake_vllm):
    proc, root = fake_vllm(ready_after=60)
    started = time.monotonic()
    with pytest.raises(ms.ServeError, match="did not answer /health within 1 s"):
        ms.wait_until_healthy(root, proc, timeout_s=1, poll_s=0.1)
    assert time.monotonic() - started < 10


def test_the_endpoint_class_runs_the_hooks_in_order(monkeypatch, tmp_path, fake_vllm):
    """Endpoint.start (snap=True), .wake (snap=False) and .stop, as a container calls them, on the stand-in."""
    entry = load_entry(monkeypatch, VLM3_RUN=f"runs/{RUN_A}", VLM3_RECIPE=str(ROOT / "recipes" / "e30m3_lora.yaml"))
    proc, root = fake_vllm()
    monkeypatch.setattr(entry, "LOCAL_ROOT", root)
    monkeypatch.setattr(entry, "start_server", lambda target: (proc, KEY))
    monkeypatch.setattr(entry, "warmup_request", lambda target: REQUEST)
    server = entry.Endpoint._get_user_cls()()
    server.start()
    assert ms.engine_sleeping(root, KEY), "asleep when the snapshot is taken"
    server.wake()
    assert not ms.engine_sleeping(root, KEY)
    assert calls(root)[-3:-1] == ["POST /wake_up", "GET /is_sleeping"]
    server.stop()
    assert proc.wait(timeout=10) is not None


def test_the_endpoint_refuses_to_start_without_its_key(monkeypatch, tmp_path):
    entry = load_entry(monkeypatch, VLM3_RUN=f"runs/{RUN_A}", VLM3_RECIPE=str(ROOT / "recipes" / "e30m3_lora.yaml"))
    monkeypatch.delenv(ms.ENDPOINT_KEY_VAR, raising=False)
    with pytest.raises(RuntimeError, match="refusing to serve without a key"):
        entry.start_server(entry.SERVE_TARGET)


def test_a_deploy_of_the_training_app_with_a_run_named_says_how_to_deploy_the_endpoint(monkeypatch, capsys):
    import click

    monkeypatch.setattr("vlm3.serve.ask.deploy_command_running", lambda: True)
    with click.Context(click.Command("deploy")) as ctx:
        ctx.params["app_ref"] = "modal_entry.py"
        load_entry(monkeypatch, VLM3_RUN=f"runs/{RUN_A}", VLM3_RECIPE=str(ROOT / "recipes" / "e30m3_lora.yaml"))
    assert ms.deploy_command(RUN_A) in capsys.readouterr().err
    with click.Context(click.Command("deploy")) as ctx:
        ctx.params["app_ref"] = "modal_entry.py::endpoint"
        load_entry(monkeypatch, VLM3_RUN=f"runs/{RUN_A}", VLM3_RECIPE=str(ROOT / "recipes" / "e30m3_lora.yaml"))
    assert "note:" not in capsys.readouterr().err


def test_eval_on_modal_finds_the_runs_own_endpoint(monkeypatch):
    """`--stage eval` without --endpoint looks up the run's app, and says how to deploy it when there is none."""
    import modal

    entry = load_entry(monkeypatch)
    looked_up: list[tuple] = []

    class Missing:
        def __init__(self, *args):
            looked_up.append(args)
            raise modal.exception.NotFoundError("no such app")

    monkeypatch.setattr(modal.Cls, "from_name", lambda app, cls: Missing(app, cls))
    with pytest.raises(ms.LaunchError, match="modal deploy modal_entry.py::endpoint"):
        entry.Cloud(None, None).endpoint(RUN_A)
    assert looked_up == [(ms.endpoint_app_name(RUN_A), ms.ENDPOINT_CLASS)]

    class Found:
        def __call__(self):
            return self

        class serve:  # noqa: N801 - the web method's name
            @staticmethod
            def get_web_url():
                return "https://ws--app-endpoint-serve.modal.run"

    monkeypatch.setattr(modal.Cls, "from_name", lambda app, cls: Found())
    assert entry.Cloud(None, None).endpoint(RUN_A) == "https://ws--app-endpoint-serve.modal.run/v1"


def test_the_snapshot_holds_the_sleeping_weights_in_host_memory():
    """Level-1 sleep moves the bf16 weights to host memory: the endpoint's memory must hold them beside vLLM."""
    fit = ms.serve_fit(load_recipe(ROOT / "recipes" / "e30m3_lora.yaml"))
    assert ms.SLEEP_LEVEL == 1
    assert fit.weights_gib * 1024 < ms.SERVE_MEMORY_MIB, json.dumps({"weights_gib": fit.weights_gib})
