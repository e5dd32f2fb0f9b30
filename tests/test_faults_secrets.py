"""Faults a hostile server shows `vlm3 ask`, `vlm3 compare` and the reports: an echoed key, an endless stream, terminal controls.

Usage:
    .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_faults_secrets.py

Each `ask` test runs the real CLI in a subprocess against a loopback OpenAI-compatible server
(port 0) that misbehaves as scripted: it echoes the request's bearer key in an error body, the
model list, the model name, the finish reason or the answer (whole or split across streamed
chunks), streams without end, or answers with terminal control and bidi characters.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web
from PIL import Image

from harness.generate import MAX_ANSWER_CHARS
from tests.conftest import ROOT, VLM3

KEY = "sk-hostile-echo-5c2e91b7d4"  # what the servers echo; must never reach stdout or stderr
UNSAFE = ["\x1b", "\x07", "\x9b", "\u202e", "\u2066"]  # ESC, BEL, C1 CSI, right-to-left override, an isolate
QUESTION = "What is the tightening torque?"
CONTROL_ANSWER = "45 Nm\x1b]0;owned\x07\x9b2J \u202edesrever\u202c \u2066iso\u2069"


def bearer(request: web.Request) -> str:
    return request.headers.get("Authorization", "").partition(" ")[2]


def completion(model: str, content: str, finish: str = "stop") -> dict:
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}


def chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    delta = {"content": content} if content is not None else {}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


async def stream_parts(request: web.Request, model: str, parts: list[str], every_s: float = 0.0,
                       forever: bool = False) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    while True:
        for part in parts:
            await response.write(chunk(model, part))
            await asyncio.sleep(every_s)
        if not forever:
            break
    await response.write(chunk(model, None, "stop"))
    await response.write(b"data: [DONE]\n\n")
    return response


async def stream_finish(request: web.Request, model: str, finish: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(chunk(model, "45 Nm"))
    await response.write(chunk(model, None, finish))
    await response.write(b"data: [DONE]\n\n")
    return response




def hostile_app(mode: str) -> web.Application:
    """One misbehaviour per mode; the key it echoes is whatever the request carried."""
    async def models(request: web.Request) -> web.Response:
        key = bearer(request)
        if mode == "models_error":
            return web.json_response({"error": {"message": f"no models for {key}"}}, status=404)
        names = {"models_one": [key], "models_many": [key, "other"]}.get(mode, ["m"])
        return web.json_response({"object": "list", "data": [{"id": n, "object": "model", "created": 0, "owned_by": "x"} for n in names]})

    async def chat(request: web.Request) -> web.StreamResponse:
        key = bearer(request)
        body = await request.json()
        model, streaming = body["model"], bool(body.get("stream"))
        if mode == "error_json":
            return web.json_response({"error": {"message": f"bad key {key}", "type": "invalid_request_error"}}, status=400)
        if mode == "error_text":
            return web.Response(text=f"proxy refused Bearer {key}", status=400, content_type="text/plain")
        if mode == "endless":
            return await stream_parts(request, model, ["more "], every_s=0.1, forever=True)
        if mode == "huge":
            part = "x" * 100_000
            return await stream_parts(request, model, [part], forever=True) if streaming else \
                web.json_response(completion(model, "x" * (MAX_ANSWER_CHARS - 5) + key))
        served = key if mode in ("served_model", "models_one") else model
        answer = {"answer": f"your key is {key} ok", "controls": CONTROL_ANSWER}.get(mode, "45 Nm")
        if mode == "controls":
            served = "m\u202e\x9b"
        finish = key if mode == "finish" else "stop"
        if streaming:
            # Split the key across chunks: redacting each chunk alone would miss it.
            parts = [answer[i:i + 5] for i in range(0, len(answer), 5)]
            return await stream_parts(request, served, parts) if finish == "stop" else await stream_finish(request, served, finish)
        return web.json_response(completion(served, answer, finish))

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


@contextlib.contextmanager
def hostile_server(mode: str):
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(hostile_app(mode), access_log=None, handle_signals=False, shutdown_timeout=0.5)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "page.png"
    Image.new("RGB", (64, 80), (240, 240, 235)).save(path)
    return path


def ask_cli(url: str, page: Path, *flags: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*VLM3, "ask", url, str(page), QUESTION, *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "VLM3_API_KEY": KEY})


FLAGS = [(), ("--json",), ("--stream",), ("--stream", "--json")]


@pytest.mark.parametrize("mode, flags", [
    ("error_json", ()), ("error_text", ()), ("models_error", ()), ("models_many", ()), ("models_one", ()),
    ("served_model", ("--model", "m")), ("answer", ("--model", "m")), ("finish", ("--model", "m")),
])
def test_ask_never_prints_a_key_the_server_echoes(page, mode, flags):
    with hostile_server(mode) as url:
        runs = {extra: ask_cli(url, page, *flags, *extra) for extra in FLAGS}
    for extra, proc in runs.items():
        shown = proc.stdout + proc.stderr
        assert KEY not in shown, (mode, extra, shown[-400:])
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        if mode == "answer":
            assert proc.returncode == 0 and "[redacted]" in shown, (extra, proc.stderr)


def test_an_endless_stream_ends_at_the_timeout_with_a_clear_message(page):
    with hostile_server("endless") as url:
        for extra in ((), ("--json",)):
            started = time.perf_counter()
            proc = ask_cli(url, page, "--model", "m", "--stream", "--timeout", "3", *extra, timeout=60)
            took = time.perf_counter() - started
            assert proc.returncode != 0 and took < 20, (took, proc.stderr)
            assert "did not end within 3 s" in proc.stderr and "Traceback" not in proc.stderr


def test_an_answer_over_the_size_limit_is_refused_without_a_piece_of_the_key(page):
    with hostile_server("huge") as url:
        for extra in ((), ("--stream",), ("--json",)):
            proc = ask_cli(url, page, "--model", "m", *extra, timeout=120)
            assert proc.returncode != 0 and f"over the {MAX_ANSWER_CHARS:,} character limit" in proc.stderr, proc.stderr[-500:]
            assert KEY[:6] not in proc.stdout + proc.stderr  # the key straddled the limit: no piece of it is shown


def test_ask_shows_control_and_bidi_characters_only_escaped(page):
    with hostile_server("controls") as url:
        for extra in FLAGS:
            proc = ask_cli(url, page, "--model", "m", *extra)
            assert proc.returncode == 0, proc.stderr
            for ch in UNSAFE:
                assert ch not in proc.stdout + proc.stderr, (extra, ascii(proc.stdout), ascii(proc.stderr))
            if "--json" in extra:
                record = json.loads(proc.stdout)
                assert record["text"] == CONTROL_ANSWER and record["model"] == "m\u202e\x9b"  # escaped, not lost
                assert "\\u202e" in proc.stdout and "\\u009b" in proc.stdout


def general(sample_id: str, passed: bool) -> dict:
    return {"id": sample_id, "kind": "general", "category": "reading", "question": "read it", "answer": "x",
            "checks": {"spec": None, "keywords": None, "token_f1": None}, "passed": passed, "judge": None}


def test_compare_prints_hostile_probe_ids_escaped(tmp_path):
    ids = ["title\x1b]0;owned\x07", "clear\x1b[2J\x1b[H", "c1\x9b2J", "rtl\u202egnp.exe"]
    for name, passed in (("a", True), ("b", False)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "scores.jsonl").write_text("".join(json.dumps(general(i, passed)) + "\n" for i in ids), encoding="utf-8")
        (folder / "summary.json").write_text(json.dumps({"label": name}), encoding="utf-8")
    proc = subprocess.run([*VLM3, "compare", str(tmp_path / "a"), str(tmp_path / "b")], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "B fails what A passed" in proc.stdout
    for ch in UNSAFE:
        assert ch not in proc.stdout + proc.stderr, ascii(proc.stdout)
    assert "\\u202e" in proc.stdout  # shown, visibly


def test_html_reports_show_bidi_overrides_as_visible_text(tmp_path):
    from harness.compare import compare_scores, render_compare_html
    from harness.report import render_report

    scores = [{**general("rtl\u202egnp.exe", False), "kind": "val", "answer": "50 Nm \u202e\u2066evil\u2069"}]
    summary = {"label": "x\u202e", "counts": {"samples": 1}, "metrics": {}, "probes": {}}
    report = render_report(summary, scores, tmp_path / "report.html").read_text(encoding="utf-8")
    page = render_compare_html(compare_scores([general("g\u202e", True)], [general("g\u202e", False)], "a", "b"),
                               tmp_path / "compare.html").read_text(encoding="utf-8")
    for text in (report, page):
        assert "\u202e" not in text and "\u2066" not in text
        assert "\\u202e" in text
