"""An OpenAI-compatible chat-completions server on 127.0.0.1 that answers as scripted.

Usage:
    with LoopbackOpenAI(script=[Reply.error(429), Reply(drop=True)]) as server:
        client = AsyncOpenAI(base_url=server.base_url, api_key="unused")
        ...                                   # then look at server.requests, server.max_in_flight

    python -m bench.loopback_openai --port 0 [--delay 0.05]   # standalone; prints its base URL

`POST /v1/chat/completions` takes the first scripted `Reply` that applies to the request
(in order; `match` narrows one to requests whose question contains a string) and answers
with it; once the script is used up, every request gets `default`. A reply can be an HTTP
error, a delay, a dropped connection or given content; content left as None is
`answer(request_body)`, by default "answer to: <question>", so each answer says which
question it belongs to. Faults a hostile server shows can be scripted too: a raw body (an HTML
error page, a completion without choices), null content, a body trickled a byte at a time, an
error that echoes the caller's key with terminal escape codes, another reported model. Every request body is recorded (unless record=False), and so is
the largest number of requests in flight at once. A request is in flight from its arrival to
its answer, so requests answered at once rarely overlap: there the number of distinct client
connections shows the client's concurrency. `GET /stats` reports these counts; `GET /v1/models`
lists the model name last asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

from aiohttp import web

HOST = "127.0.0.1"  # loopback only: this server answers anyone who can reach it


@dataclass(frozen=True)
class Reply:
    """One scripted answer. status 200 with content None means `answer(request_body)`."""

    status: int = 200
    content: str | None = None
    delay: float = 0.0  # seconds before answering (or dropping)
    drop: bool = False  # close the connection without sending a response
    headers: Mapping[str, str] = field(default_factory=dict)
    match: str | None = None  # only a request whose question contains this string takes this reply
    raw: str | None = None  # send this body as is (an HTML error page, `{"choices": []}`) with content_type
    content_type: str = "application/json"
    null_content: bool = False  # a completion whose message content is null
    trickle_s: float = 0.0  # send the body one byte at a time, this many seconds apart (a stalled proxy)
    echo_key: bool = False  # an error whose message repeats the request's Authorization header, escape codes and all
    served_model: str | None = None  # the `model` the completion reports (default: the one requested)

    @classmethod
    def error(cls, status: int, *, retry_after_ms: int | None = 1, match: str | None = None) -> Reply:
        # `retry-after: 0` is what a busy server sends, but the openai client only honours a positive
        # delay and otherwise backs off for 0.5-8 s; `retry-after-ms`, which it reads first, keeps retries fast.
        headers = {"retry-after": "0"}
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        return cls(status=status, headers=headers, match=match)


def question_of(body: dict) -> str:
    """The text of the last user message (its text parts joined), "" if there is none."""
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def echo_question(body: dict) -> str:
    return f"answer to: {question_of(body)}"


class ServerState:
    """What the handlers share with the thread that reads the results; every access holds the lock."""

    def __init__(self, script: Iterable[Reply], default: Reply, answer: Callable[[dict], str], record: bool):
        self.lock = threading.Lock()
        self.script: deque[Reply] = deque(script)
        self.default = default
        self.answer = answer
        self.record = record
        self.requests: list[dict] = []
        self.request_count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.peers: set = set()  # distinct client connections: how many the client opened
        self.last_model = "loopback"

    def next_reply(self, question: str) -> Reply:
        with self.lock:
            for index, reply in enumerate(self.script):
                if reply.match is None or reply.match in question:
                    del self.script[index]
                    return reply
            return self.default


def completion(body: dict, content: str) -> dict:
    prompt_tokens = len(json.dumps(body.get("messages", []))) // 4  # a rough count: only its presence matters
    completion_tokens = len(content.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "loopback"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
    }


def error_body(status: int) -> dict:
    kind = "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    return {"error": {"message": f"scripted HTTP {status}", "type": kind, "param": None, "code": status}}


def make_app(state: ServerState) -> web.Application:
    async def chat_completions(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        with state.lock:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            state.peers.add(peer)
        try:
            try:
                body = json.loads(await request.read())
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return web.json_response({"error": {"message": "body is not a JSON object", "type": "invalid_request_error"}}, status=400)
            with state.lock:
                state.request_count += 1
                state.last_model = body.get("model", state.last_model)
                if state.record:
                    state.requests.append(body)
            reply = state.next_reply(question_of(body))
            if reply.delay:
                await asyncio.sleep(reply.delay)
            if reply.drop:
                # Abort (RST, no response bytes): the client sees a dropped connection, as when a server dies.
                request.transport.abort()
                return web.Response()
            if reply.echo_key:
                text = f"\x1b[31mdenied\x1b[0m\x1b]0;pwned\x07 for {request.headers.get('Authorization', '')}"
                payload = {"error": {"message": text, "type": "authentication_error", "param": None, "code": reply.status}}
                return web.json_response(payload, status=reply.status, headers=dict(reply.headers))
            if reply.raw is not None:
                data = reply.raw.encode()
            elif reply.status != 200:
                data = json.dumps(error_body(reply.status)).encode()
            else:
                content = reply.content if reply.content is not None else state.answer(body)
                payload = completion(body, content)
                if reply.null_content:
                    payload["choices"][0]["message"]["content"] = None
                if reply.served_model is not None:
                    payload["model"] = reply.served_model
                data = json.dumps(payload).encode()
            if not reply.trickle_s:
                return web.Response(body=data, status=reply.status, headers={"Content-Type": reply.content_type, **reply.headers})
            response = web.StreamResponse(status=reply.status, headers={"Content-Type": reply.content_type, **reply.headers})
            response.content_length = len(data)
            await response.prepare(request)
            try:
                for i in range(len(data)):
                    await response.write(data[i:i + 1])
                    await asyncio.sleep(reply.trickle_s)
                await response.write_eof()
            except ConnectionError:  # the client gave up (its deadline): nothing more to send
                pass
            return response
        finally:
            with state.lock:
                state.in_flight -= 1

    async def models(request: web.Request) -> web.Response:
        with state.lock:
            name = state.last_model
        return web.json_response({"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "loopback"}]})

    async def stats(request: web.Request) -> web.Response:
        with state.lock:
            return web.json_response({"requests": state.request_count, "max_in_flight": state.max_in_flight,
                                      "in_flight": state.in_flight, "connections": len(state.peers)})

    app = web.Application(client_max_size=64 * 1024**2)  # page images are larger than aiohttp's 1 MiB default
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/stats", stats)
    return app


async def start_site(state: ServerState, port: int) -> tuple[web.AppRunner, int]:
    # A scripted delay can outlive the client that gave up on it; stopping need not wait for it.
    runner = web.AppRunner(make_app(state), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, HOST, port)
    await site.start()
    return runner, runner.addresses[0][1]


class LoopbackOpenAI:
    """The server in a background thread with its own event loop; a context manager.

    server.base_url       "http://127.0.0.1:PORT/v1"
    server.requests       the JSON bodies received, in arrival order (a copy)
    server.questions      the question of each of those requests
    server.request_count  requests received (counted even with record=False)
    server.max_in_flight  the most requests being handled at the same moment
    server.connections    distinct client connections seen
    server.push(*replies) append to the script while running
    """

    def __init__(
        self,
        script: Iterable[Reply] = (),
        *,
        default: Reply = Reply(),
        answer: Callable[[dict], str] = echo_question,
        record: bool = True,
        port: int = 0,
        start_timeout_s: float = 10.0,
    ):
        self.state = ServerState(script, default, answer, record)
        self.port = port
        self.start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    @property
    def requests(self) -> list[dict]:
        with self.state.lock:
            return list(self.state.requests)

    @property
    def questions(self) -> list[str]:
        return [question_of(body) for body in self.requests]

    @property
    def request_count(self) -> int:
        with self.state.lock:
            return self.state.request_count

    @property
    def max_in_flight(self) -> int:
        with self.state.lock:
            return self.state.max_in_flight

    @property
    def connections(self) -> int:
        with self.state.lock:
            return len(self.state.peers)

    def push(self, *replies: Reply) -> None:
        with self.state.lock:
            self.state.script.extend(replies)

    def start(self) -> LoopbackOpenAI:
        self._thread = threading.Thread(target=self._serve, name="loopback-openai", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.start_timeout_s):
            raise RuntimeError(f"loopback server did not start within {self.start_timeout_s} s")
        if self._start_error is not None:
            raise RuntimeError(f"loopback server failed to start: {self._start_error}") from self._start_error
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._runner, self.port = loop.run_until_complete(start_site(self.state, self.port))
        except BaseException as exc:  # noqa: BLE001 - handed to start(), which raises it in the caller's thread
            self._start_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)

    def __enter__(self) -> LoopbackOpenAI:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


async def serve_until_signal(port: int, default: Reply) -> None:
    # Nothing reads the bodies of a standalone server: keeping them would only grow its memory.
    state = ServerState((), default, echo_question, record=False)
    runner, port = await start_site(state, port)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    # The first line of stdout is the base URL: a parent that asked for port 0 reads the real port from it.
    print(f"http://{HOST}:{port}/v1", flush=True)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loopback_openai", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port; the URL is printed)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    asyncio.run(serve_until_signal(args.port, Reply(delay=args.delay)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
