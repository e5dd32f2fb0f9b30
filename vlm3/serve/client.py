"""How vlm3 talks to an OpenAI-compatible endpoint (vLLM, `transformers serve`, a deployed app): the official `openai`
client with one connection per concurrent request and every attempt bounded in time, the settings a run asks with,
pages as data: URLs, and the key kept out of anything written down. `vlm3 ask` and the harness's bulk generation
both speak through it."""

from __future__ import annotations

import asyncio
import base64
import importlib
import importlib.util
from dataclasses import dataclass

from data_adapters.images import page_bytes

MAX_BACKOFF_S = 8.0  # the openai client's longest wait between retries (openai/_constants.py MAX_RETRY_DELAY)
MAX_ANSWER_CHARS = 1_000_000  # longer server text is cut: no page question has a megabyte of answer


@dataclass(frozen=True)
class GenerationSettings:
    base_url: str
    api_key: str
    model: str
    max_tokens: int = 512
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 5
    system_prompt: str | None = None
    endpoint_id: str | None = None  # what the answers belong to: base_url, or "local:<model dir>" for a local server
    weights_id: str | None = None  # the weights' identity where known (local runs: files, sizes, mtimes)

    @property
    def endpoint(self) -> str:
        return self.endpoint_id or self.base_url.rstrip("/")

    @property
    def request_deadline_s(self) -> float:
        """Wall-clock bound on one request with every retry: each attempt's timeout plus the longest backoffs."""
        return self.timeout_s * (self.max_retries + 1) + MAX_BACKOFF_S * self.max_retries


def image_data_url(path: str) -> str:
    """A page as a data: URL: the file itself, or a lossless PNG of its normalised pixels (data_adapters.images)."""
    data, mime = page_bytes(path)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Every occurrence of a configured key replaced: a server that echoes the request's key must not get it written down."""
    for secret in secrets:
        if secret and len(secret) >= 8:  # "EMPTY" and other placeholders are no secret; short strings would redact words
            text = text.replace(secret, "[redacted]")
    return text


def bounded_attempts(client_class: type, attempt_s: float) -> type:
    """The openai client's HTTP client class with each attempt bounded in total time, body included.

    The client's own timeout bounds each read, so a server that trickles a byte at a time could
    hold one attempt for minutes. A whole attempt (send, and for a non-streamed reply the body)
    longer than attempt_s raises the HTTP library's ReadTimeout, which the openai client retries
    with its backoff like any other timeout."""
    # The HTTP library the openai client is built on: httpx2 from openai 3 on, httpx before.
    libraries = [importlib.import_module(name) for name in ("httpx2", "httpx") if importlib.util.find_spec(name)]
    library = next((lib for lib in libraries if issubclass(client_class, lib.AsyncClient)), None)
    if library is None:  # an HTTP client we do not know: keep the whole-request deadline only
        return client_class
    timeout_error = library.ReadTimeout

    class AttemptBounded(client_class):
        async def send(self, request, **kwargs):
            try:
                return await asyncio.wait_for(super().send(request, **kwargs), timeout=attempt_s)
            except asyncio.TimeoutError:
                raise timeout_error(f"no complete response within {attempt_s:g} s", request=request) from None

    return AttemptBounded


def make_client(settings: GenerationSettings):
    import openai

    # One connection per concurrent request; the pool would otherwise cap concurrency at its default.
    # The client's own Limits type: httpx2.Limits from openai 3 on, httpx.Limits before.
    limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
        max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
    )
    try:
        # aiohttp's pool keeps up at high concurrency, where httpx's spends its time rescanning
        # every connection for every request (BENCHMARKS.md); httpx where the aiohttp extra is missing.
        http_client = bounded_attempts(openai.DefaultAioHttpClient, settings.timeout_s)(limits=limits, timeout=settings.timeout_s)
    except (AttributeError, RuntimeError):
        http_client = bounded_attempts(openai.DefaultAsyncHttpxClient, settings.timeout_s)(limits=limits, timeout=settings.timeout_s)
    return openai.AsyncOpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key,
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
        http_client=http_client,
    )
