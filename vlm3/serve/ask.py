"""`vlm3 ask`: one question about one page image, answered by a run (served for the call) or an endpoint.

Usage:
    vlm3 ask runs/tiny-cpu-demo/latest page.png "What is the tightening torque of the head bolts?"   # served for the call (vlm3.serve.local)
    VLM3_API_KEY=... vlm3 ask https://<workspace>--vlm3-serve.modal.run/v1 page.jpg "..." --model e30m3 --stream

The request is the one the harness sends and an app should send: the page first (a local file
as a base64 data URL, or an http(s) URL passed through for the server to fetch), then the
question, temperature 0 by default. The answer goes to stdout (tokens as they arrive with
--stream); latency and the server's token counts go to stderr, so `> answer.txt` keeps only the
answer. The endpoint's key is read from $VLM3_API_KEY only and never printed: a server that echoes
it (in an error, a model name, the answer) has it redacted, even split across streamed tokens.
A streamed answer must end within --timeout of the stream opening and at MAX_ANSWER_CHARS, or ask exits 1.

The verb's arguments and output are vlm3.cli.ask's. Also here: what `modal deploy` prints about the endpoint it
deployed (endpoint_banner).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

KEY_VAR = "VLM3_API_KEY"
NO_KEY = "EMPTY"  # the openai client needs some key; a keyed server answers it with 401
MAX_IMAGE_BYTES = 20 * 1024**2  # 20 MiB: far above a scanned page; base64 makes the request 4/3 of it
MAX_IMAGE_PIXELS = 200_000_000  # px, the data check's refusal (data_adapters.checks.REFUSED_IMAGE_PIXELS): a bomb
MAX_QUESTION_CHARS = 8_000  # a question, not a document
MAX_TOKENS_LIMIT = 32_768  # above any max_model_len a recipe serves
DEFAULT_TIMEOUT_S = 600.0  # a cold endpoint starts a container and loads the model before it answers
DEFAULT_MAX_TOKENS = 512
IMAGE_URL_SCHEMES = ("http://", "https://", "data:")


class AskError(Exception):
    """A mistake or a refusal the user can act on; the message is a sentence."""


@dataclass(frozen=True)
class Answer:
    text: str
    model: str
    latency_s: float  # request sent to last byte, seconds
    first_token_s: float | None  # streaming only: request sent to the first content token
    prompt_tokens: int | None  # as the server counts them (text + visual tokens); None when it does not say
    completion_tokens: int | None
    finish_reason: str | None

    def to_dict(self) -> dict:
        return asdict(self)


# Pure parts: targets, the request, what is printed


def is_endpoint(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def endpoint_base_url(url: str) -> str:
    """The OpenAI base URL: a bare host (what `modal deploy` shows) gets /v1; anything else is kept."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if not parts.netloc:
        raise AskError(f"{url!r} is not an endpoint URL; pass one such as https://<workspace>--vlm3-serve.modal.run/v1")
    return url if parts.path else f"{url}/v1"


LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "0.0.0.0")


def is_local(url: str) -> bool:
    """A server on this machine (loopback): `vlm3 serve`, not a Modal endpoint."""
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    return host in LOCAL_HOSTS or host.startswith("127.")


def image_url_for(image: str) -> str:
    """An http(s) or data URL as given (the server fetches it); a local file, checked, as a base64 data URL."""
    if image.startswith(IMAGE_URL_SCHEMES):
        return image
    from PIL import Image, UnidentifiedImageError

    from vlm3.serve.client import image_data_url

    if "\x00" in image:
        raise AskError("the image path holds a NUL byte; pass the path of a page image (JPEG, PNG, WebP)")
    path = Path(image)
    if not path.is_file():
        raise AskError(f"image {image}: no such file; pass a page image (JPEG, PNG, WebP) or an https:// URL")
    size = path.stat().st_size
    if size > MAX_IMAGE_BYTES:
        raise AskError(f"image {image}: {size / 1024**2:.1f} MiB is over the {MAX_IMAGE_BYTES // 1024**2} MiB limit; "
                       "resize it (the server shrinks every page to the pixel cap the model was trained with anyway)")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise AskError(f"image {image}: {img.width}x{img.height} is over the {MAX_IMAGE_PIXELS // 10**6} "
                               "megapixel limit (a decompression bomb, or a scan far larger than a page); resize it")
            img.verify()
    except Image.DecompressionBombError as exc:
        raise AskError(f"image {image}: refused as a decompression bomb ({exc}); pass a page image") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise AskError(f"image {image}: not a readable image ({exc}); pass a JPEG, PNG or WebP page") from None
    return image_data_url(str(path))


def check_question(question: str) -> str:
    if not question.strip():
        raise AskError("the question is empty; pass it as the third argument, in quotes")
    if len(question) > MAX_QUESTION_CHARS:
        raise AskError(f"the question is {len(question)} characters, over the {MAX_QUESTION_CHARS} limit")
    return question


def chat_request(model: str, image_url: str, question: str, *, system: str | None = None,
                 max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float = 0.0, stream: bool = False) -> dict[str, Any]:
    """Keyword arguments of chat.completions.create: the page first, then the question, as in training."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}},
        {"type": "text", "text": question},
    ]})
    request: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
    if stream:
        # vLLM sends token counts in a last chunk only when asked; transformers serve always does.
        request.update(stream=True, stream_options={"include_usage": True})
    return request


def terminal_text(text: str) -> str:
    """Model output made safe for a terminal: newlines and tabs kept, other control characters (escape sequences) dropped."""
    return "".join(ch for ch in text if ch in "\n\t" or ch.isprintable())


def redacted(answer: Answer, secrets: tuple[str, ...]) -> Answer:
    """Every text the server chose with the key redacted, then bounded: redacting after a cut could leave part of a key."""
    from vlm3.serve.client import MAX_ANSWER_CHARS, redact

    text = redact(answer.text, secrets)
    if len(text) > MAX_ANSWER_CHARS:
        raise AskError(too_long())
    finish = None if answer.finish_reason is None else redact(str(answer.finish_reason), secrets)
    return replace(answer, text=text, model=redact(answer.model, secrets), finish_reason=finish)


def too_long() -> str:
    from vlm3.serve.client import MAX_ANSWER_CHARS

    return f"the answer is over the {MAX_ANSWER_CHARS:,} character limit; stopped reading it (no page question has a megabyte of answer)"


class RedactedTokens:
    """Streamed tokens printed as they arrive, with the key redacted even when it arrives split across tokens:
    the last len(key) - 1 characters wait for the next token, or for close()."""

    def __init__(self, secrets: tuple[str, ...], write: Callable[[str], None]):
        self.secrets = secrets
        self.held_chars = max((len(secret) for secret in secrets), default=1) - 1
        self.pending = ""
        self.write = write
        self.printed = False

    def feed(self, token: str) -> None:
        from vlm3.serve.client import redact

        self.pending = redact(self.pending + token, self.secrets)
        ready = len(self.pending) - self.held_chars
        if ready > 0:
            self.write(self.pending[:ready])
            self.printed = True
            self.pending = self.pending[ready:]

    def close(self) -> None:
        """The end of the answer: what was held back is no key (a stopped answer is never closed: it could hold part of one)."""
        self.write(self.pending)
        self.pending = ""


def format_stats(answer: Answer) -> str:
    """'latency 0.42 s (first token 0.10 s); tokens 57 prompt + 12 completion; finish stop; model NAME'."""
    latency = f"latency {answer.latency_s:.2f} s"
    if answer.first_token_s is not None:
        latency += f" (first token {answer.first_token_s:.2f} s)"
    if answer.prompt_tokens is None and answer.completion_tokens is None:
        tokens = "tokens not reported by the server"
    else:
        tokens = f"tokens {answer.prompt_tokens if answer.prompt_tokens is not None else '?'} prompt + " \
                 f"{answer.completion_tokens if answer.completion_tokens is not None else '?'} completion"
    return f"{latency}; {tokens}; finish {terminal_text(answer.finish_reason or '?')}; model {terminal_text(answer.model)}"


def describe_failure(exc: BaseException, where: str, key_set: bool, model: str, timeout_s: float, local: bool | None = None) -> str:
    """The openai client's exception as a sentence that says what to do; local (default: `where` is a loopback URL):
    a server on this machine, whose key is no Modal secret."""
    import openai

    local = is_local(where) if local is None else local
    if isinstance(exc, openai.AuthenticationError):
        # A server on this machine (`vlm3 serve --api-key`) has no Modal secret: name the key it was started with.
        which = ("the key `vlm3 serve` was started with (its --api-key or $VLM3_API_KEY)" if local
                 else "the VLLM_API_KEY of the endpoint's Modal secret (`serve.api_key_secret`, vlm3-endpoint by default)")
        if key_set:
            return (f"{where} refused the key in ${KEY_VAR} (HTTP 401 Unauthorized): it is not this endpoint's key. "
                    f"Set {KEY_VAR} to {which}.")
        return f"{where} needs a key (HTTP 401 Unauthorized) and ${KEY_VAR} is not set. Export {KEY_VAR} with {which}."
    if isinstance(exc, openai.NotFoundError):
        printed = "`vlm3 serve` prints it" if local else "`modal deploy` prints it"
        return (f"{where} has no model {model!r} or no chat-completions route (HTTP 404: {server_message(exc)}); "
                f"pass --model with the served model name ({printed}; `GET /v1/models` lists it), or leave --model out.")
    cause = exc.__cause__ or exc.__context__
    # The client's aiohttp transport reports a refused connection as a ConnectTimeout: not a slow server.
    if isinstance(exc, openai.APITimeoutError) and type(cause).__name__ != "ConnectTimeout":
        if local:
            return f"{where} did not answer within {timeout_s:.0f} s; try again, or raise --timeout."
        return (f"{where} did not answer within {timeout_s:.0f} s. A scaled-down Modal endpoint starts a container and loads "
                "the model before it answers (the run's smoke_test.json has vLLM's load_s); try again, or raise --timeout.")
    if isinstance(exc, openai.APIConnectionError):
        printed = "`vlm3 serve` prints it" if local else "`modal deploy` prints it"
        return f"cannot reach {where} ({cause or exc}); check the URL ({printed}) and that the server is up."
    if isinstance(exc, openai.APIStatusError):
        return f"{where} answered HTTP {exc.status_code}: {server_message(exc)}"
    return f"the request to {where} failed: {type(exc).__name__}: {exc}"


def server_message(exc: Any) -> str:
    """The server's own error text, one line, bounded, printable (it is shown in a terminal).

    vLLM's key check answers {"error": "Unauthorized"}; OpenAI-style errors nest {"error": {"message": ...}}.
    """
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = (inner.get("message") or inner.get("detail") or json.dumps(inner)) if isinstance(inner, dict) else inner
    else:
        text = body if body is not None else str(exc)
    return " ".join(terminal_text(str(text)).split())[:300]


# The call (the official openai client, set up as the harness sets it up)


async def ask_once(client, request: dict[str, Any], on_token: Callable[[str], None] | None = None,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> Answer:
    """One answer; a streamed one must end within timeout_s of the stream opening and at MAX_ANSWER_CHARS (AskError):
    the client's timeout bounds each read only, and a server can send a token every 0.1 s forever."""
    from vlm3.serve.client import MAX_ANSWER_CHARS

    started = time.perf_counter()
    if not request.get("stream"):
        response = await client.chat.completions.create(**request)
        choice = response.choices[0]
        usage = response.usage
        return Answer(choice.message.content or "", response.model or request["model"], round(time.perf_counter() - started, 3), None,
                      getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None), choice.finish_reason)
    parts: list[str] = []
    first: float | None = None
    finish = usage = None
    model = request["model"]
    chars = 0
    stream = await client.chat.completions.create(**request)

    async def read() -> None:
        nonlocal model, usage, first, finish, chars
        async for chunk in stream:
            model = chunk.model or model
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    if first is None:
                        first = time.perf_counter() - started
                    chars += len(choice.delta.content)
                    if chars > MAX_ANSWER_CHARS:
                        raise AskError(too_long())
                    parts.append(choice.delta.content)
                    if on_token:
                        on_token(choice.delta.content)
                finish = choice.finish_reason or finish

    try:
        await asyncio.wait_for(read(), timeout=timeout_s)
    except asyncio.TimeoutError:
        raise AskError(f"the streamed answer did not end within {timeout_s:g} s (--timeout); stopped after {chars:,} characters") from None
    finally:
        await stream.close()
    return Answer("".join(parts), model, round(time.perf_counter() - started, 3), None if first is None else round(first, 3),
                  getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None), finish)


async def served_models(client) -> list[str]:
    page = await client.models.list()
    return [m.id for m in page.data]


async def ask_endpoint(base_url: str, api_key: str, model: str | None, build: Callable[[str], dict[str, Any]],
                       timeout_s: float, on_token: Callable[[str], None] | None = None, max_retries: int = 2) -> Answer:
    """One answer; model None asks the server which model it serves (an endpoint serving exactly one)."""
    from vlm3.serve.client import GenerationSettings, make_client

    settings = GenerationSettings(base_url=base_url, api_key=api_key, model=model or "", concurrency=1,
                                  timeout_s=timeout_s, max_retries=max_retries)
    client = make_client(settings)
    try:
        if model is None:
            import openai

            try:
                names = await served_models(client)
            except openai.APIStatusError as exc:
                if isinstance(exc, openai.AuthenticationError):
                    raise
                # transformers serve cannot list models without a Hugging Face cache folder.
                raise AskError(f"{base_url} did not list its models (HTTP {exc.status_code}: {server_message(exc)}); "
                               "pass --model with the served model name") from None
            if len(names) != 1:
                listed = ", ".join(names) or "none"
                raise AskError(f"{base_url} serves {len(names)} models ({terminal_text(listed)}); pass --model with the one to ask")
            model = names[0]
        return await ask_once(client, build(model), on_token, timeout_s)
    finally:
        await client.close()


# After `modal deploy`: where the endpoint is and how to ask it


def endpoint_banner(base_url: str, model: str, key_secret: str, scaledown_window_s: int) -> list[str]:
    return [
        f"endpoint:  {base_url}",
        f"model:     {model}",
        f"key:       the VLLM_API_KEY in the Modal secret {key_secret!r}; send it as `Authorization: Bearer ...` (vlm3 reads ${KEY_VAR})",
        f"idle:      containers stop after {scaledown_window_s} s without requests; the next request waits for a cold start",
        f'next:      vlm3 ask {base_url} page.jpg "What is the tightening torque of the cylinder head bolts?" --model {model}',
    ]


def deploy_command_running(argv: list[str] | None = None) -> bool:
    """True inside `modal deploy` (its click command is named deploy), not `modal run` or `modal serve`."""
    try:
        import click

        ctx = click.get_current_context(silent=True)
    except ImportError:
        ctx = None
    if ctx is not None and ctx.command is not None:
        return ctx.command.name == "deploy"
    argv = sys.argv if argv is None else argv
    return len(argv) > 1 and Path(argv[0]).name == "modal" and argv[1] == "deploy"


def print_deployed_endpoint(function, model: str, key_secret: str, scaledown_window_s: int, out: Callable[[str], None] = print) -> bool:
    """Print the banner once `modal deploy` has created the web function (registered with atexit).

    A deploy that failed before creating the function leaves it unhydrated: get_web_url raises
    and nothing is printed, so no URL is claimed for an endpoint that does not exist.
    """
    try:
        url = function.get_web_url()
    except Exception:  # noqa: BLE001 - any failure here means there is no endpoint to describe
        return False
    if not url:
        return False
    out("")
    for line in endpoint_banner(endpoint_base_url(url), model, key_secret, scaledown_window_s):
        out(line)
    return True
