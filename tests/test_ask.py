"""`vlm3 ask`, examples/ask_endpoint.py and docs/modal.md's "Call the endpoint from an app", against real servers.

Usage:
    VLM3_REQUIRE_TRAINER=1 .venv/bin/python -m pytest -q tests/test_ask.py

The tiny model is served by the real `transformers serve` (once per module) under the demo recipe's
served name, through vlm3.serve.guard's name mapping (the same verbs on vLLM: tests/test_vllm_cpu.py); the key tests use a
loopback server whose key check answers as vLLM's does (401, {"error": "Unauthorized"}, /v1/* guarded,
/health open), driven by the real openai client, the real CLI and curl.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest
from aiohttp import web
from PIL import Image

from bench.loopback_openai import HOST, Reply, ServerState, echo_question, make_app
from data_adapters.tokens import visual_tokens
from tests.conftest import ROOT, TINY_MODEL, run_cli
from vlm3.serve import ask

KEY = "sk-endpoint-test-7d1f0c"  # the loopback server's key; must never be printed
SERVED_NAME = "tiny-cpu-demo"  # the demo recipe's served name (it sets no serve.served_model_name)
TRANSFORMERS = {"VLM3_ENGINE": "transformers"}  # a run served for the call: transformers serve, even where vLLM is installed
QUESTION = "What is the tightening torque of the cylinder head bolts?"


# Pure parts


@pytest.mark.parametrize(
    "given, expected",
    [
        ("https://ws--vlm3-serve.modal.run", "https://ws--vlm3-serve.modal.run/v1"),
        ("https://ws--vlm3-serve.modal.run/", "https://ws--vlm3-serve.modal.run/v1"),
        ("https://ws--vlm3-serve.modal.run/v1", "https://ws--vlm3-serve.modal.run/v1"),
        ("http://127.0.0.1:8000/v1/", "http://127.0.0.1:8000/v1"),
        ("http://gateway.local/openai/v1", "http://gateway.local/openai/v1"),
    ],
)
def test_endpoint_base_url(given, expected):
    assert ask.endpoint_base_url(given) == expected


def test_endpoint_without_host_is_refused():
    with pytest.raises(ask.AskError, match="not an endpoint URL"):
        ask.endpoint_base_url("https://")


def test_request_is_the_page_then_the_question():
    request = ask.chat_request("e30m3-lora", "data:image/png;base64,AAAA", QUESTION, system="Answer from the manual.",
                               max_tokens=77, temperature=0.0, stream=True)
    assert request["model"] == "e30m3-lora" and request["max_tokens"] == 77 and request["temperature"] == 0.0
    system, user = request["messages"]
    assert system == {"role": "system", "content": "Answer from the manual."}
    assert [part["type"] for part in user["content"]] == ["image_url", "text"]
    assert user["content"][1]["text"] == QUESTION
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}
    assert "stream" not in ask.chat_request("m", "https://x/p.jpg", QUESTION)


def test_local_image_becomes_a_data_url_of_its_bytes(tmp_path):
    page = tmp_path / "page.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(page)
    url = ask.image_url_for(str(page))
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix) and base64.b64decode(url[len(prefix):]) == page.read_bytes()
    assert ask.image_url_for("https://example.com/page-042.jpg") == "https://example.com/page-042.jpg"


def test_bad_images_and_questions_are_named(tmp_path, monkeypatch):
    with pytest.raises(ask.AskError, match="missing.jpg: no such file"):
        ask.image_url_for(str(tmp_path / "missing.jpg"))
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    with pytest.raises(ask.AskError, match="notes.jpg: not a readable image"):
        ask.image_url_for(str(text))
    big = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(big)
    monkeypatch.setattr(ask, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(ask.AskError, match="over the 0 MiB limit"):
        ask.image_url_for(str(big))
    with pytest.raises(ask.AskError, match="question is empty"):
        ask.check_question("   ")
    with pytest.raises(ask.AskError, match="over the 8000 limit"):
        ask.check_question("x" * 8001)


def test_model_output_cannot_drive_the_terminal():
    assert ask.terminal_text("12 N\u00b7m\x1b[2J\x1b]0;owned\x07\nnext\tline\r") == "12 N\u00b7m[2J]0;owned\nnext\tline"


def test_stats_say_when_the_server_gave_no_token_counts():
    counted = ask.Answer("a", "m", 0.4213, 0.1, 57, 12, "stop")
    assert ask.format_stats(counted) == "latency 0.42 s (first token 0.10 s); tokens 57 prompt + 12 completion; finish stop; model m"
    silent = ask.Answer("a", "m", 0.5, None, None, None, None)
    assert "tokens not reported by the server" in ask.format_stats(silent)


# After `modal deploy`


def test_banner_names_the_url_model_key_and_the_ask_line():
    lines = ask.endpoint_banner("https://ws--vlm3-serve.modal.run/v1", "e30m3-lora", "vlm3-endpoint", 300)
    text = "\n".join(lines)
    assert "https://ws--vlm3-serve.modal.run/v1" in lines[0] and "e30m3-lora" in lines[1]
    assert "'vlm3-endpoint'" in text and "Authorization: Bearer" in text and "300 s" in text
    assert lines[-1] == 'next:      vlm3 ask https://ws--vlm3-serve.modal.run/v1 page.jpg "What is the tightening torque of the cylinder head bolts?" --model e30m3-lora'


class FakeWebFunction:
    def __init__(self, url: str | None = None, error: Exception | None = None):
        self.url, self.error = url, error

    def get_web_url(self):
        if self.error:
            raise self.error
        return self.url


def test_deployed_endpoint_is_printed_only_when_it_exists():
    printed: list[str] = []
    assert ask.print_deployed_endpoint(FakeWebFunction("https://ws--vlm3-serve.modal.run"), "e30m3-lora", "vlm3-endpoint", 300, printed.append)
    assert "endpoint:  https://ws--vlm3-serve.modal.run/v1" in printed
    printed.clear()
    assert not ask.print_deployed_endpoint(FakeWebFunction(error=RuntimeError("not hydrated")), "m", "s", 300, printed.append)
    assert not ask.print_deployed_endpoint(FakeWebFunction(None), "m", "s", 300, printed.append)
    assert printed == []


def test_a_web_function_that_was_never_deployed_prints_nothing():
    import modal

    app = modal.App("vlm3-ask-test")

    @app.function(serialized=True)
    @modal.web_server(port=8000)
    def serve() -> None:
        pass

    printed: list[str] = []
    assert not ask.print_deployed_endpoint(serve, "m", "s", 300, printed.append)
    assert printed == []


@pytest.mark.parametrize("command, deploying", [("deploy", True), ("run", False), ("serve", False)])
def test_deploy_is_told_apart_from_run_and_serve(command, deploying):
    with click.Context(click.Command(command)):
        assert ask.deploy_command_running() is deploying
    assert ask.deploy_command_running(["/x/bin/modal", command, "modal_entry.py"]) is deploying
    assert not ask.deploy_command_running(["pytest", "deploy"])


def import_modal_entry(monkeypatch, command: str, recipe_file: Path) -> tuple[object, list[tuple]]:
    """modal_entry.py imported as `modal <command>` imports it, recording what it hands to atexit."""
    import atexit
    import importlib.util
    import time

    from vlm3.cloud import support as ms

    registered: list[tuple] = []
    monkeypatch.setattr(atexit, "register", lambda func, *args: registered.append((func, args)))
    for name in ("VLM3_RUN", "VLM3_RECIPE", ms.SERVE_TARGET_ENV, ms.MOUNT_ROOT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VLM3_RUN", "runs/e30m3-lora/20261125T170000Z")
    monkeypatch.setenv("VLM3_RECIPE", str(recipe_file))
    spec = importlib.util.spec_from_file_location(f"modal_entry_ask_{time.monotonic_ns()}", ROOT / "modal_entry.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    with click.Context(click.Command(command)):
        spec.loader.exec_module(module)
    return module, registered


def test_modal_deploy_registers_the_endpoint_banner(monkeypatch, tmp_path):
    import yaml

    raw = yaml.safe_load((ROOT / "recipes" / "e30m3_lora.yaml").read_text())
    raw["serve"].update(scaledown_window_s=120, api_key_secret="my-endpoint-key")
    recipe_file = tmp_path / "serve.yaml"
    for served_name, expected in ((raw["serve"]["served_model_name"], "e30m3"), (None, "e30m3-lora")):  # default: the run's recipe name
        raw["serve"]["served_model_name"] = served_name
        recipe_file.write_text(yaml.safe_dump(raw))
        entry, registered = import_modal_entry(monkeypatch, "deploy", recipe_file)
        [(func, args)] = [(f, a) for f, a in registered if f is ask.print_deployed_endpoint]  # modal registers its own too
        assert args == (entry.serve, expected, "my-endpoint-key", 120)
    # Before a deploy has created it, the real web function has no URL: nothing is printed.
    printed: list[str] = []
    assert not func(*args, out=printed.append) and printed == []
    _, on_run = import_modal_entry(monkeypatch, "run", recipe_file)
    assert [f for f, _ in on_run if f is ask.print_deployed_endpoint] == []


# The key: a loopback server that checks it as vLLM does


@web.middleware
async def vllm_key_check(request: web.Request, handler):
    # As vLLM's AuthenticationMiddleware: every /v1 route needs `Authorization: Bearer <key>`; /health does not.
    if request.path.startswith("/v1"):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token != KEY:
            return web.json_response({"error": "Unauthorized"}, status=401)
    return await handler(request)


@contextlib.contextmanager
def keyed_server():
    state = ServerState((), default=Reply(), answer=echo_question, record=True)
    app = make_app(state)
    app.middlewares.append(vllm_key_check)
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, HOST, 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{port}", state
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.fixture
def page(tmp_path) -> Path:
    path = tmp_path / "page.jpg"
    Image.new("RGB", (850, 1100), (240, 240, 235)).save(path, quality=90)
    return path


def test_no_key_gets_the_documented_error(page):
    import openai

    with keyed_server() as (root, state):
        client = openai.OpenAI(base_url=f"{root}/v1", api_key="EMPTY", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(**ask.chat_request("e30m3-lora", ask.image_url_for(str(page)), QUESTION))
        assert caught.value.status_code == 401 and caught.value.response.json() == {"error": "Unauthorized"}

        env = {k: v for k, v in os.environ.items() if k != ask.KEY_VAR}
        missing = subprocess.run([sys.executable, "-m", "vlm3.cli.main", "ask", root, str(page), QUESTION, "--model", "e30m3-lora"],
                                 cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
        wrong = run_cli("ask", root, str(page), QUESTION, "--model", "e30m3-lora", env={ask.KEY_VAR: "sk-not-this-one"}, timeout=120)
        right = run_cli("ask", root, str(page), QUESTION, env={ask.KEY_VAR: KEY}, timeout=120)
        assert state.request_count == 1  # only the keyed request reached the chat route

    assert missing.returncode == 1 and "Traceback" not in missing.stderr
    assert "needs a key (HTTP 401 Unauthorized) and $VLM3_API_KEY is not set" in missing.stderr
    assert wrong.returncode == 1 and "refused the key in $VLM3_API_KEY (HTTP 401 Unauthorized)" in wrong.stderr
    # Without --model the served name comes from GET /v1/models, which the key guards too.
    assert right.returncode == 0, right.stderr
    assert right.stdout.strip() == f"answer to: {QUESTION}"
    assert re.search(r"latency \d+\.\d\d s; tokens \d+ prompt \+ \d+ completion; finish stop", right.stderr)
    for proc in (missing, wrong, right):
        assert KEY not in proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_curl_without_the_key_gets_401_and_health_stays_open():
    with keyed_server() as (root, _):
        denied = subprocess.run(["curl", "-sS", "-w", "\n%{http_code}", f"{root}/v1/chat/completions", "-H", "Content-Type: application/json",
                                 "-d", json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})],
                                capture_output=True, text=True, timeout=30)
        health = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{root}/health"], capture_output=True, text=True, timeout=30)
    body, status = denied.stdout.rsplit("\n", 1)
    assert (status, json.loads(body)) == ("401", {"error": "Unauthorized"})
    assert health.stdout == "200"


# The tiny model behind the real `transformers serve`


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    from tests.conftest import trainer_available

    if not trainer_available():
        pytest.skip("needs the trainer environment and the tiny model (make trainer-env tiny-model)")
    from vlm3.serve.local import local_server

    with local_server(TINY_MODEL, log_file=tmp_path_factory.mktemp("serve") / "serve.log", served_name=SERVED_NAME) as server:
        yield server


@pytest.fixture(scope="module")
def manual_page(sample_dir) -> Path:
    return sample_dir / "training_data" / "images" / "11-07.jpg"


def ask_json(server, image: str, *extra: str, max_tokens: int = 24) -> dict:
    proc = run_cli("ask", server.base_url, image, QUESTION, "--model", server.model, "--max-tokens", str(max_tokens), "--json", *extra, timeout=180)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@contextlib.contextmanager
def file_server(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.trainer
def test_transformers_serve_lists_the_served_name_and_ask_finds_it(tiny_server, manual_page):
    """What vLLM's --served-model-name does, in front of transformers serve: /v1/models lists the recipe's name,
    answers carry it, `vlm3 ask URL` finds it without --model, another name is vLLM's 404."""
    import httpx

    assert tiny_server.model == SERVED_NAME and tiny_server.engine == "transformers serve"
    listed = httpx.get(f"{tiny_server.base_url}/models", timeout=30)
    assert [m["id"] for m in listed.json()["data"]] == [SERVED_NAME]
    found = run_cli("ask", tiny_server.base_url, str(manual_page), QUESTION, "--max-tokens", "8", "--json", timeout=180)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["model"] == SERVED_NAME
    assert json.loads(found.stdout)["text"] == ask_json(tiny_server, str(manual_page), max_tokens=8)["text"]
    streamed = ask_json(tiny_server, str(manual_page), "--stream", max_tokens=8)
    assert streamed["model"] == SERVED_NAME  # every streamed chunk is renamed, not only the whole answer
    wrong = run_cli("ask", tiny_server.base_url, str(manual_page), QUESTION, "--model", "e30m3", timeout=180)
    assert wrong.returncode == 1 and "has no model 'e30m3'" in wrong.stderr
    assert "The model `e30m3` does not exist." in wrong.stderr and "`vlm3 serve` prints it" in wrong.stderr
    assert "modal" not in wrong.stderr.lower()


@pytest.mark.trainer
def test_ask_prints_the_answer_latency_and_token_counts(tiny_server, manual_page):
    proc = run_cli("ask", tiny_server.base_url, str(manual_page), QUESTION, "--model", tiny_server.model, "--max-tokens", "12", timeout=180)
    assert proc.returncode == 0, proc.stderr
    record = ask_json(tiny_server, str(manual_page), max_tokens=12)
    assert proc.stdout.rstrip("\n") == ask.terminal_text(record["text"]) and record["text"].strip()
    # The server's own counts: the page's visual tokens and the question, then at most max_tokens.
    assert record["prompt_tokens"] > visual_tokens(*Image.open(manual_page).size, 56 * 56, 112 * 112)
    assert 1 <= record["completion_tokens"] <= 12 and record["finish_reason"] in ("stop", "length")
    stats = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(rf"latency \d+\.\d\d s; tokens {record['prompt_tokens']} prompt \+ {record['completion_tokens']} completion; finish \w+; model .+", stats)


@pytest.mark.trainer
def test_stream_gives_the_same_answer_token_by_token(tiny_server, manual_page):
    whole = ask_json(tiny_server, str(manual_page))
    streamed = ask_json(tiny_server, str(manual_page), "--stream")
    assert streamed["text"] == whole["text"]  # temperature 0: the same greedy answer
    assert streamed["first_token_s"] is not None and streamed["first_token_s"] <= streamed["latency_s"]
    assert (streamed["prompt_tokens"], streamed["completion_tokens"]) == (whole["prompt_tokens"], whole["completion_tokens"])
    text = run_cli("ask", tiny_server.base_url, str(manual_page), QUESTION, "--model", tiny_server.model, "--max-tokens", "24", "--stream", timeout=180)
    assert text.returncode == 0 and text.stdout.rstrip("\n") == ask.terminal_text(whole["text"])
    assert "first token" in text.stderr


@pytest.mark.trainer
def test_large_pages_are_resized_to_the_trained_cap(tiny_server, manual_page, tmp_path):
    """The tiny model's processor caps pages at 112x112 pixels, as a run's processor caps them at images.max_pixels."""
    sizes = {"scan": (1700, 2200), "page": (850, 1100), "thumb": (56, 56)}
    counts = {}
    for name, size in sizes.items():
        path = tmp_path / f"{name}.jpg"
        Image.open(manual_page).convert("RGB").resize(size).save(path, quality=90)
        counts[name] = ask_json(tiny_server, str(path), max_tokens=1)["prompt_tokens"]
    tokens = {name: visual_tokens(*size, 56 * 56, 112 * 112) for name, size in sizes.items()}
    assert counts["scan"] == counts["page"]  # both above the cap: the same visual tokens
    assert counts["scan"] - counts["thumb"] == tokens["scan"] - tokens["thumb"] > 0  # Qwen2-VL's resize rule, counted by the server


@pytest.mark.trainer
def test_an_image_url_is_fetched_by_the_server(tiny_server, manual_page):
    with file_server(manual_page.parent) as root:
        by_url = ask_json(tiny_server, f"{root}/{manual_page.name}")
    by_bytes = ask_json(tiny_server, str(manual_page))
    assert (by_url["text"], by_url["prompt_tokens"]) == (by_bytes["text"], by_bytes["prompt_tokens"])


@pytest.mark.trainer
def test_the_example_script_answers_as_vlm3_ask_does(tiny_server, manual_page):
    expected = ask_json(tiny_server, str(manual_page), max_tokens=256)["text"]
    for extra in ([], ["--stream"]):
        proc = subprocess.run([sys.executable, str(ROOT / "examples" / "ask_endpoint.py"), tiny_server.base_url, tiny_server.model,
                               str(manual_page), QUESTION, *extra], capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.rstrip("\n") == expected
        assert re.search(r"tokens: \d+ prompt \+ \d+ completion", proc.stderr)


def readme_section_blocks(language: str) -> list[str]:
    readme = (ROOT / "docs" / "modal.md").read_text(encoding="utf-8")
    section = readme.split("## Call the endpoint from an app", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


@pytest.mark.trainer
def test_the_readme_python_runs(tiny_server, manual_page, tmp_path):
    blocks = readme_section_blocks("python")
    assert len(blocks) == 2
    shutil.copy(manual_page, tmp_path / "page.jpg")
    (tmp_path / "readme_example.py").write_text("\n".join(blocks), encoding="utf-8")
    env = {**os.environ, "VLM3_ENDPOINT": tiny_server.base_url, "VLM3_API_KEY": "EMPTY", "VLM3_MODEL": tiny_server.model}
    proc = subprocess.run([sys.executable, "readme_example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    expected = ask_json(tiny_server, str(manual_page), max_tokens=256)
    counts = f"{expected['prompt_tokens']} prompt tokens, {expected['completion_tokens']} completion tokens"
    # The plain call, then the streamed one: the same answer and the same counts each time.
    assert proc.stdout == f"{expected['text']}\n{counts}\n{expected['text']}\n {counts}\n"


@pytest.mark.trainer
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readme_curl_runs(tiny_server, manual_page, tmp_path):
    [block] = [b for b in readme_section_blocks("bash") if "curl" in b]
    script = "\n".join(line for line in block.splitlines() if not line.startswith("export "))  # the test sets those itself
    shutil.copy(manual_page, tmp_path / "page.jpg")
    with file_server(tmp_path) as root:
        script = script.replace("https://example.com/manual/page-042.jpg", f"{root}/page.jpg")
        env = {**os.environ, "VLM3_ENDPOINT": tiny_server.base_url, "VLM3_API_KEY": "EMPTY", "VLM3_MODEL": tiny_server.model}
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    decoder, text, replies = json.JSONDecoder(), proc.stdout.strip(), []
    while text:
        reply, end = decoder.raw_decode(text)
        replies.append(reply)
        text = text[end:].strip()
    expected = ask_json(tiny_server, str(manual_page), max_tokens=256)
    assert len(replies) == 2  # the data URL, then the URL the server downloaded
    for reply in replies:
        assert reply["choices"][0]["message"]["content"] == expected["text"]
        assert reply["usage"]["prompt_tokens"] == expected["prompt_tokens"]


@pytest.mark.trainer
def test_ask_a_run_serves_it_for_the_call_and_answers_as_the_evaluation_did(trained_run):
    samples = [json.loads(line) for line in (trained_run / "eval" / "finetuned" / "samples.jsonl").read_text().splitlines()]
    predictions = {json.loads(line)["id"]: json.loads(line) for line in (trained_run / "eval" / "finetuned" / "predictions.jsonl").read_text().splitlines()}
    sample = next(s for s in samples if s["kind"] == "val")
    system = sample.get("system")  # a row's own system turn (the recipe's system_prompt is vlm3 ask's default too)
    # The engine the evaluation was served with (meta.json says), so the same server answers again.
    engine = json.loads((trained_run / "eval" / "finetuned" / "meta.json").read_text()).get("server", {}).get("engine")
    flag = {"vllm": "vllm", "transformers serve": "transformers"}.get(engine, "transformers")
    # No --max-tokens: a run's default is its recipe's eval.max_tokens, as in the evaluation.
    proc = run_cli("ask", str(trained_run), sample["image"], sample["question"], "--json", "--engine", flag,
                   *(["--system", system] if system else []), timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    # The same merged weights, request and greedy decoding as `vlm3 eval`: the same answer.
    assert record["text"] == predictions[sample["id"]]["answer"]
    assert record["model"] == predictions[sample["id"]]["model"] == SERVED_NAME
    assert "serving" in proc.stderr and (trained_run / "logs" / "serve-ask.log").exists()
    assert re.search(r"tokens \d+ prompt \+ \d+ completion", proc.stderr)


def test_ask_a_folder_that_is_no_run_is_a_clear_error(tmp_path, page):
    proc = run_cli("ask", str(tmp_path), str(page), QUESTION)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "is not a run directory" in proc.stderr and "endpoint URL" in proc.stderr


@pytest.mark.trainer
def test_ask_a_run_uses_its_recipes_system_prompt_and_max_tokens(tiny_server, manual_page, tmp_path):
    """A run whose merged model is the tiny model: `vlm3 ask RUN` must send what `vlm3 ask URL` sends with the recipe's settings."""
    from vlm3.recipe.schema import load_recipe
    from vlm3.recipe.runs import RunDir

    recipe = load_recipe(ROOT / "recipes" / "tiny_cpu_demo.yaml")
    recipe = recipe.model_copy(update={"data": recipe.data.model_copy(update={"system_prompt": "Answer from the BMW manual only."})})
    run = RunDir.create(recipe, root=tmp_path / "runs")
    run.output_dir.mkdir(parents=True)
    run.merged_dir.symlink_to(TINY_MODEL, target_is_directory=True)
    run.mark_stage("merge", "done")  # a merge that passed its checks: ask RUN serves no other (test_faults_runs.py)
    (run.path / "merge_check.json").write_text(json.dumps({"ok": True, "problems": []}), encoding="utf-8")
    proc = run_cli("ask", str(run.path), str(manual_page), QUESTION, "--json", env=TRANSFORMERS, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"as '{SERVED_NAME}' with transformers serve" in proc.stderr
    from_run = json.loads(proc.stdout)
    from_url = ask_json(tiny_server, str(manual_page), "--system", "Answer from the BMW manual only.", max_tokens=recipe.eval.max_tokens)
    assert (from_run["text"], from_run["prompt_tokens"], from_run["completion_tokens"]) == \
        (from_url["text"], from_url["prompt_tokens"], from_url["completion_tokens"])
    assert from_run["prompt_tokens"] > ask_json(tiny_server, str(manual_page), max_tokens=1)["prompt_tokens"]  # the system turn was sent
    assert (run.logs_dir / "serve-ask.log").exists() and "serving" in proc.stderr
