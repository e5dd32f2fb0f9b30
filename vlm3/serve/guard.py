"""`transformers serve` behind vlm3's front: the recipe's served name (as vLLM's --served-model-name) and an optional key.

Usage (the trainer environment's python; the key comes from the environment, never argv):
    [VLM3_SERVE_API_KEY=...] python -m vlm3.serve.guard MODEL_DIR --served-model-name NAME --device cpu --host 127.0.0.1 --port 8000

transformers serve has neither a key option nor a served-name option: pinned to MODEL_DIR, it answers
to that path only (another name is a 400), names it `MODEL_DIR@main` in its answers, and lists its
Hugging Face cache, not the model, at /v1/models. This runs the same CLI with the app it builds
wrapped in two small ASGI layers (the server, routes and handlers stay transformers' own):
`serve_as` makes it answer as vLLM does under the name, `require_key` answers 401 without the key.
"""

from __future__ import annotations

import hmac
import json
import os
import sys

KEY_ENV = "VLM3_SERVE_API_KEY"
# Set by vlm3 only for a server it starts on 127.0.0.1 without a key (`vlm3 serve` with no --api-key):
# KeyGuard (vLLM's --middleware, the Modal app's command line) then lets every request through.
WITHOUT_KEY_ENV = "VLM3_SERVE_WITHOUT_KEY"
OPEN_PATHS = ("/health",)  # readiness checks carry no key (as with vLLM's --api-key)
SERVED_NAME_FLAG = "--served-model-name"
NAMED_ROUTES = ("/v1/chat/completions", "/v1/completions", "/v1/responses")  # POST bodies that name a model


def require_key(app, key: str):
    """An ASGI app that passes a request on only with `Authorization: Bearer <key>` (compared in constant time)."""
    expected = f"Bearer {key}".encode()

    async def guarded(scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            return await app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, expected):
            return await app(scope, receive, send)
        await send_json(send, 401, {"error": "Unauthorized"})  # vLLM's own 401 body: one shape for clients

    return guarded


async def send_json(send, status: int, value: dict) -> None:
    body = json.dumps(value).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def model_list(name: str) -> dict:
    """GET /v1/models as vLLM answers it for one served model."""
    return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "vlm3", "root": name}]}


def unknown_model(requested: object) -> dict:
    """vLLM's 404 for a model it does not serve (its wording), so clients see one error for both engines."""
    return {"error": {"message": f"The model `{requested}` does not exist.", "type": "NotFoundError", "param": "model", "code": 404}}


def renamed_json(body: bytes, reported: str, name: str) -> bytes:
    """A JSON answer with transformers' model id replaced by the served name; anything else unchanged."""
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, dict) and value.get("model") == reported:
        return json.dumps({**value, "model": name}, ensure_ascii=False).encode()
    return body


def renamed_sse_line(line: bytes, reported: str, name: str) -> bytes:
    if not line.startswith(b"data: "):
        return line
    payload = line[len(b"data: "):]
    renamed = renamed_json(payload, reported, name)
    return line if renamed is payload else b"data: " + renamed


def serve_as(app, name: str, model: str):
    """transformers serve pinned to `model` (its force_model argument), answering as vLLM with --served-model-name `name`:
    GET /v1/models lists `name`; a request for `name` (or for no model) reaches the pinned model, a request for
    another name is vLLM's 404; answers and streamed chunks say `name` instead of `<model>@main`."""
    reported = model if "@" in model else f"{model}@main"  # transformers' process_model_name

    async def named(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        path, method = scope.get("path"), scope.get("method")
        if path == "/v1/models" and method == "GET":
            return await send_json(send, 200, model_list(name))
        if path not in NAMED_ROUTES or method != "POST":
            return await app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if isinstance(request, dict):
            requested = request.get("model")
            if requested not in (None, name, model):
                return await send_json(send, 404, unknown_model(requested))
            body = json.dumps({**request, "model": model}, ensure_ascii=False).encode()
        headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await app(scope, replay, renaming_send(send, reported, name))

    return named


def renaming_send(send, reported: str, name: str):
    """send() for an answer: a JSON body whole and renamed (its content-length fixed), an event stream line by line."""
    state: dict = {"start": None, "kind": None, "held": [], "carry": b""}

    async def renamed(message):
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers") or [])
            kind = headers.get(b"content-type", b"").split(b";")[0].strip()
            state["kind"] = kind
            if kind == b"text/event-stream":
                return await send(message)
            state["start"] = message
            return None
        if message["type"] != "http.response.body":
            return await send(message)
        more = message.get("more_body", False)
        if state["kind"] == b"text/event-stream":
            data = state["carry"] + message.get("body", b"")
            *lines, state["carry"] = data.split(b"\n")
            if not more:
                lines, state["carry"] = [*lines, state["carry"]], b""
            out = b"\n".join(renamed_sse_line(line, reported, name) for line in lines)
            if lines and more:
                out += b"\n"
            return await send({**message, "body": out})
        state["held"].append(message.get("body", b""))
        if more:
            return None
        body = b"".join(state["held"])
        if state["kind"] == b"application/json":
            body = renamed_json(body, reported, name)
        start = state["start"]
        headers = [(k, v) for k, v in start.get("headers") or [] if k != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        return await send({"type": "http.response.body", "body": body})

    return renamed


class KeyGuard:
    """The same check as an ASGI middleware class, for servers that take one by import path
    (vLLM: `--middleware vlm3.serve.guard.KeyGuard`); the key is read from VLLM_API_KEY or VLM3_SERVE_API_KEY.
    vLLM's own --api-key guards only /v1/*: this guards every route but /health. Without a key it refuses
    to start, unless vlm3 started the server on loopback without one (VLM3_SERVE_WITHOUT_KEY=1)."""

    def __init__(self, app):
        key = os.environ.get("VLLM_API_KEY") or os.environ.get(KEY_ENV)
        if key:
            self.guarded = require_key(app, key)
        elif os.environ.get(WITHOUT_KEY_ENV) == "1":
            self.guarded = app
        else:
            raise RuntimeError("KeyGuard needs VLLM_API_KEY (or VLM3_SERVE_API_KEY) in the environment")

    async def __call__(self, scope, receive, send):
        await self.guarded(scope, receive, send)


def split_served_name(argv: list[str]) -> tuple[str | None, list[str]]:
    """(the --served-model-name value, the arguments for transformers serve without it)."""
    if SERVED_NAME_FLAG not in argv:
        return None, argv
    at = argv.index(SERVED_NAME_FLAG)
    return argv[at + 1], argv[:at] + argv[at + 2:]


def main(argv: list[str]) -> int:
    key = os.environ.pop(KEY_ENV, "")
    name, argv = split_served_name(argv)
    model = argv[0] if argv and not argv[0].startswith("-") else None
    if name and not model:
        print(f"{SERVED_NAME_FLAG} needs the model folder as the first argument", file=sys.stderr)
        return 2
    import transformers.cli.serving.server as server_module
    from transformers.cli.transformers import main as transformers_main

    build = server_module.build_server

    def build_front(*args, **kwargs):
        app = build(*args, **kwargs)
        if name:
            app = serve_as(app, name, model)
        return require_key(app, key) if key else app

    server_module.build_server = build_front
    sys.argv = ["transformers", "serve", *argv]
    return transformers_main() or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
