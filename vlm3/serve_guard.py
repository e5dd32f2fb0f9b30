"""`transformers serve` with a required API key: every route but /health answers 401 without it.

Usage (the trainer environment's python; the key comes from the environment, never argv):
    VLM3_SERVE_API_KEY=... python -m vlm3.serve_guard MODEL_DIR --device cpu --host 127.0.0.1 --port 8000

transformers serve has no key option; this runs the same CLI with the app it builds wrapped
in a small ASGI check (the server, routes and handlers stay transformers' own).
"""

from __future__ import annotations

import hmac
import json
import os
import sys

KEY_ENV = "VLM3_SERVE_API_KEY"
OPEN_PATHS = ("/health",)  # readiness checks carry no key (as with vLLM's --api-key)


def require_key(app, key: str):
    """An ASGI app that passes a request on only with `Authorization: Bearer <key>` (compared in constant time)."""
    expected = f"Bearer {key}".encode()

    async def guarded(scope, receive, send):
        if scope["type"] != "http" or scope.get("path") in OPEN_PATHS:
            return await app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, expected):
            return await app(scope, receive, send)
        body = json.dumps({"error": "Unauthorized"}).encode()  # vLLM's own 401 body: one shape for clients
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return guarded


class KeyGuard:
    """The same check as an ASGI middleware class, for servers that take one by import path
    (vLLM: `--middleware vlm3.serve_guard.KeyGuard`); the key is read from VLLM_API_KEY or VLM3_SERVE_API_KEY.
    vLLM's own --api-key guards only /v1/*: this guards every route but /health."""

    def __init__(self, app):
        key = os.environ.get("VLLM_API_KEY") or os.environ.get(KEY_ENV)
        if not key:
            raise RuntimeError("KeyGuard needs VLLM_API_KEY (or VLM3_SERVE_API_KEY) in the environment")
        self.guarded = require_key(app, key)

    async def __call__(self, scope, receive, send):
        await self.guarded(scope, receive, send)


def main(argv: list[str]) -> int:
    key = os.environ.pop(KEY_ENV, "")
    if not key:
        print(f"{KEY_ENV} is not set: nothing to require", file=sys.stderr)
        return 2
    import transformers.cli.serving.server as server_module
    from transformers.cli.transformers import main as transformers_main

    build = server_module.build_server
    server_module.build_server = lambda *args, **kwargs: require_key(build(*args, **kwargs), key)
    sys.argv = ["transformers", "serve", *argv]
    return transformers_main() or 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
