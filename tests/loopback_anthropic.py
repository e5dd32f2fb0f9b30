"""A loopback HTTP server that speaks Anthropic's Messages and Message Batches APIs (and OpenAI's chat
completions) with scripted replies: the real SDKs and the real DeepEval metrics talk to it in tests and
in bench/bench_judge.py.

Usage:
    with LoopbackJudge() as server:                          # 127.0.0.1, port 0
        server.script("You grade an answer", status(529), status(429), reply('{"correctness": 9'))
        client = anthropic.Anthropic(api_key="sk-test", base_url=server.url)
        ...
        server.count("/v1/messages")                          # requests seen on that path

By default every request gets a valid answer built from the JSON schema it sends (Anthropic
`output_config.format.schema`, OpenAI `response_format.json_schema.schema`), see `schema_answer`.
`server.script(marker, *actions)` queues actions for the requests whose prompt text contains `marker`
(a string, or a predicate on the prompt): the next such request gets the next action. Actions: reply(text, stop_reason), json_reply(obj),
status(code, retry_after=0), slow(seconds, then), drop(). Usage counts: input tokens are the prompt's
characters / 4 plus Claude's image rule (width * height / 750); output tokens are the reply's characters / 4.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import socket
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

CHARS_PER_TOKEN = 4
IMAGE_PIXELS_PER_TOKEN = 750


@dataclass
class Action:
    kind: str  # "reply", "status", "slow", "drop"
    text: str = ""
    stop_reason: str = "end_turn"
    code: int = 200
    headers: dict = field(default_factory=dict)
    seconds: float = 0.0
    then: "Action | None" = None


def reply(text: str, stop_reason: str = "end_turn") -> Action:
    return Action("reply", text=text, stop_reason=stop_reason)


def json_reply(obj: Any) -> Action:
    return reply(json.dumps(obj))


def status(code: int, retry_after: float | None = 0, error_type: str | None = None) -> Action:
    kind = error_type or {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error"}.get(code, "api_error")
    body = json.dumps({"type": "error", "error": {"type": kind, "message": f"scripted {code}"}})
    headers = {} if retry_after is None else {"retry-after": str(retry_after)}
    return Action("status", text=body, code=code, headers=headers)


def slow(seconds: float, then: Action | None = None) -> Action:
    return Action("slow", seconds=seconds, then=then)


def drop() -> Action:
    return Action("drop")


SENTENCE = "The answer states the value and unit given on the service manual page for this step."


def schema_answer(schema: dict, prompt: str = "") -> Any:
    """A valid, deterministic instance of a JSON schema, with the sizes a judge's reply usually has.
    Its sentences end with a tag of the prompt, so different prompts get different replies (as from a judge)."""
    defs = schema.get("$defs", {})
    sentence = f"{SENTENCE[:-1]} (#{zlib.crc32(prompt.encode()) % 10_000:04d})."

    def fill(node: dict, name: str = "") -> Any:
        if "$ref" in node:
            return fill(defs[node["$ref"].split("/")[-1]], name)
        if "anyOf" in node:
            return fill(next(n for n in node["anyOf"] if n.get("type") != "null"), name)
        if "enum" in node:
            return "yes" if "yes" in node["enum"] else node["enum"][0]
        kind = node.get("type")
        if kind == "object":
            return {key: fill(value, key) for key, value in node.get("properties", {}).items()}
        if kind == "array":
            if name == "unsupported":
                return []
            return [fill(node.get("items", {}), name.rstrip("s")) for _ in range(3)]
        if kind == "integer" or kind == "number":
            return {"score": 8, "correctness": 9, "spec_faithfulness": 8}.get(name, 1)
        if kind == "boolean":
            return True
        return sentence

    return fill(schema)


def image_tokens(data_b64: str) -> int:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(base64.b64decode(data_b64))) as image:
            return math.ceil(image.width * image.height / IMAGE_PIXELS_PER_TOKEN)
    except Exception:  # noqa: BLE001 - an unreadable image counts as nothing
        return 0


def _anthropic_prompt(params: dict) -> tuple[str, int]:
    """(the prompt's text, its input tokens) for a Messages request."""
    text, images = [], 0
    for message in params.get("messages", []):
        content = message.get("content")
        for block in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if block.get("type") == "text":
                text.append(block["text"])
            elif block.get("type") == "image":
                images += image_tokens(block["source"]["data"])
    joined = "".join(text)
    return joined, math.ceil(len(joined) / CHARS_PER_TOKEN) + images


def _openai_prompt(params: dict) -> tuple[str, int]:
    text, images = [], 0
    for message in params.get("messages", []):
        content = message.get("content")
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            if part.get("type") == "text":
                text.append(part["text"])
            elif part.get("type") == "image_url":
                images += image_tokens(part["image_url"]["url"].split(",", 1)[-1])
    joined = "".join(text)
    return joined, math.ceil(len(joined) / CHARS_PER_TOKEN) + images


class LoopbackJudge:
    def __init__(self, responder: Callable[[dict, str], str] | None = None, batch_polls: int = 1):
        self.responder = responder  # (schema, prompt) -> reply text; default: JSON of schema_answer
        self.batch_polls = batch_polls  # retrieves that still say in_progress before a batch ends
        self.log: list[dict] = []
        self.in_flight = self.max_in_flight = 0  # Messages / chat requests being answered at once
        self._rules: list[tuple[Any, deque]] = []
        self._batches: dict[str, dict] = {}
        self.cancelled: list[str] = []  # batch ids a client asked to cancel
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "LoopbackJudge":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def script(self, marker: str | Callable[[str], bool], *actions: Action) -> None:
        """Queue actions for requests whose prompt contains `marker` (or for which marker(prompt) is true)."""
        with self._lock:
            self._rules.append((marker, deque(actions)))

    def count(self, path: str, method: str = "POST") -> int:
        with self._lock:
            return sum(1 for entry in self.log if entry["path"] == path and entry["method"] == method)

    def requests(self, path: str = "/v1/messages") -> list[dict]:
        with self._lock:
            return [entry["body"] for entry in self.log if entry["path"] == path]

    def _next_action(self, prompt: str) -> Action | None:
        with self._lock:
            for marker, actions in self._rules:
                if actions and (marker(prompt) if callable(marker) else marker in prompt):
                    return actions.popleft()
        return None

    def _answer(self, schema: dict | None, prompt: str) -> str:
        if self.responder:
            return self.responder(schema, prompt)
        return json.dumps(schema_answer(schema, prompt)) if schema else SENTENCE

    def message(self, params: dict, text: str, stop_reason: str, input_tokens: int) -> dict:
        return {
            "id": f"msg_{next(self._ids):06d}", "type": "message", "role": "assistant", "model": params.get("model"),
            "content": [{"type": "text", "text": text}], "stop_reason": stop_reason, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": math.ceil(len(text) / CHARS_PER_TOKEN)},
        }

    def _batch_object(self, batch: dict) -> dict:
        ended = batch["polls"] >= self.batch_polls
        counts = {"processing": 0 if ended else len(batch["results"]), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            for result in batch["results"]:
                counts[result["result"]["type"]] += 1
        now = datetime.now(timezone.utc)
        return {
            "id": batch["id"], "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts, "created_at": batch["created"], "expires_at": (now + timedelta(hours=24)).isoformat(),
            "ended_at": now.isoformat() if ended else None, "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch['id']}/results" if ended else None,
        }

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, body: str, headers: dict | None = None, content_type: str = "application/json") -> None:
                data = body.encode()
                try:
                    self.send_response(code)
                    self.send_header("content-type", content_type)
                    self.send_header("content-length", str(len(data)))
                    self.send_header("request-id", f"req_{next(server._ids):06d}")
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout we scripted)

            def _perform(self, action: Action | None, make_ok: Callable[[str, str], dict]) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._perform_now(action, make_ok)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _perform_now(self, action: Action | None, make_ok: Callable[[str, str], dict]) -> None:
                while action is not None and action.kind == "slow":
                    time.sleep(action.seconds)
                    action = action.then
                if action is not None and action.kind == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if action is not None and action.kind == "status":
                    self._send(action.code, action.text, action.headers)
                    return
                text, stop = (action.text, action.stop_reason) if action is not None else (None, "end_turn")
                self._send(200, json.dumps(make_ok(text, stop)))

            def _read(self) -> dict:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.log.append({"method": self.command, "path": self.path, "body": body})
                return body

            def do_POST(self) -> None:
                body = self._read()
                if self.path == "/v1/messages":
                    prompt, tokens = _anthropic_prompt(body)
                    schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
                    self._perform(server._next_action(prompt), lambda text, stop: server.message(
                        body, server._answer(schema, prompt) if text is None else text, stop, tokens))
                elif self.path == "/v1/chat/completions":
                    prompt, tokens = _openai_prompt(body)
                    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")

                    def completion(text, stop):
                        text = server._answer(schema, prompt) if text is None else text
                        out = math.ceil(len(text) / CHARS_PER_TOKEN)
                        return {"id": f"chatcmpl-{next(server._ids)}", "object": "chat.completion", "created": int(time.time()),
                                "model": body.get("model"), "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": "length" if stop == "max_tokens" else "stop"}],
                                "usage": {"prompt_tokens": tokens, "completion_tokens": out, "total_tokens": tokens + out}}

                    self._perform(server._next_action(prompt), completion)
                elif self.path == "/v1/messages/batches":
                    self._create_batch(body)
                elif self.path.endswith("/cancel"):
                    batch_id = self.path.split("/")[-2]
                    with server._lock:
                        server.cancelled.append(batch_id)
                    self._send(200, json.dumps(server._batch_object(server._batches[batch_id])))
                else:
                    self._send(404, json.dumps({"type": "error", "error": {"type": "not_found_error", "message": self.path}}))

            def _create_batch(self, body: dict) -> None:
                results = []
                for item in body.get("requests", []):
                    params = item["params"]
                    prompt, tokens = _anthropic_prompt(params)
                    schema = ((params.get("output_config") or {}).get("format") or {}).get("schema")
                    action = server._next_action(prompt)
                    while action is not None and action.kind == "slow":
                        action = action.then
                    if action is None or action.kind == "reply":
                        text = server._answer(schema, prompt) if action is None else action.text
                        stop = "end_turn" if action is None else action.stop_reason
                        result = {"type": "succeeded", "message": server.message(params, text, stop, tokens)}
                    else:
                        error = json.loads(action.text) if action.kind == "status" else {
                            "type": "error", "error": {"type": "api_error", "message": "dropped"}}
                        result = {"type": "errored", "error": error}
                    results.append({"custom_id": item["custom_id"], "result": result})
                batch_id = f"msgbatch_{next(server._ids):06d}"
                batch = {"id": batch_id, "results": results, "polls": 0, "created": datetime.now(timezone.utc).isoformat()}
                with server._lock:
                    server._batches[batch_id] = batch
                self._send(200, json.dumps(server._batch_object(batch)))

            def do_GET(self) -> None:
                self._read()
                parts = self.path.strip("/").split("/")
                if len(parts) >= 4 and parts[:3] == ["v1", "messages", "batches"] and parts[3] in server._batches:
                    batch = server._batches[parts[3]]
                    if len(parts) == 5 and parts[4] == "results":
                        lines = "".join(json.dumps(r) + "\n" for r in batch["results"])
                        self._send(200, lines, content_type="application/binary")
                        return
                    batch["polls"] += 1
                    self._send(200, json.dumps(server._batch_object(batch)))
                    return
                self._send(404, json.dumps({"type": "error", "error": {"type": "not_found_error", "message": self.path}}))

        return Handler


def write_eval_dir(eval_dir, samples: list[dict], answers: dict[str, str | None], judge: dict | None, model: str = "tiny") -> None:
    """A generated evaluation directory (meta.json, samples.jsonl, predictions.jsonl) with the given answers,
    the layout `vlm3 generate` writes; `judge` is the recipe's eval.judge as a dict (None: no judge)."""
    from pathlib import Path

    eval_dir = Path(eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    meta = {"label": "finetuned", "model": model, "endpoint": "http://127.0.0.1:9/v1", "settings": {}, "probe_threshold": 0.85,
            "created": "2026-11-25T00:00:00+00:00", "judge": judge}
    (eval_dir / "meta.json").write_text(json.dumps(meta))
    (eval_dir / "samples.jsonl").write_text("".join(json.dumps({**s, "prompt_hash": "h0"}) + "\n" for s in samples))
    predictions = [{"id": s["id"], "model": model, "prompt_hash": "h0", "answer": answers.get(s["id"]), "error": None,
                    "finish_reason": "stop"} for s in samples if answers.get(s["id"]) is not None]
    (eval_dir / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in predictions))
