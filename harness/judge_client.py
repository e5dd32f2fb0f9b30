"""One judge call: a structured request to Claude (or an OpenAI-compatible model), retried, cached and counted.

Usage:
    client = JudgeClient(JudgeSettings.from_spec(spec, api_key=key), JudgeCache(eval_dir / "judge_cache.sqlite"))
    verdict, reply = client.ask(JudgeRequest("rubric", {"version": 1}, (page_image(path), "Question: ..."), RubricVerdict))

Structured output: Claude's JSON outputs (`output_config.format` with the JSON schema of the pydantic
class DeepEval asks for; constrained decoding on Claude 4.5 and later). The reply is a text block
holding JSON, validated here against the same class. Forced tool use is not used: Claude Sonnet 5.5
answers a forced `tool_choice` with a 400. If a model rejects the schema, the request is sent once more
without it and the JSON is read from the text (the prompts ask for JSON anyway). A reply that does
not validate (cut at max_tokens, a refusal, prose, a value out of range) raises `JudgeReplyError`
with the raw text: the caller leaves the sample unscored, never gives it a default score.

Cache: one SQLite file keyed by provider, judge model, metric, the metric's prompt-shaping settings,
the prompt text and the SHA-256 of every image in it (DeepEval's own cache keys images by a random
id and misses). Only replies that validate are stored, so a re-run asks again for what was unscored.
Thresholds are not in the key: changing one re-scores from the cache.

Retries: 408, 409, 429, 5xx (529 overloaded included), timeouts and dropped connections, with
exponential backoff (or the server's retry-after), `max_retries` times. The SDK's own retries are off
so every attempt is counted here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import random
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ValidationError

PROTOCOL_VERSION = 1  # bump when the request format changes in a way that changes replies
JUDGE_MAX_TOKENS = 16_000  # room for adaptive thinking plus the JSON; billed only for tokens used
OPENAI_TEMPERATURE = 0.0  # OpenAI-compatible judges only; Claude gets none (see AnthropicTransport)
MAX_IMAGE_EDGE = 1568  # px: Claude downsizes anything larger, so sending more costs bytes, not quality
MAX_IMAGE_PIXELS = 1_150_000  # Claude's other limit before it downsizes
IMAGE_PIXELS_PER_TOKEN = 750  # Claude's image token rule: width * height / 750
BATCH_DISCOUNT = 0.5  # Message Batches API: half the list price for input and output
MAX_BATCH_REQUESTS = 10_000  # per batch we send (the API allows 100,000)
MAX_BATCH_BYTES = 200 * 1024 * 1024  # per batch we send (the API allows 256 MB)

PRICES_AS_OF = "2026-11-25"
PRICE_SOURCE = (
    "Anthropic model pages (platform.claude.com/docs/en/models/<model>/overview, read 2026-11-25) "
    "and DeepEval 4.3.1's ANTHROPIC_MODELS_DATA; batch = 50% of both rates"
)


@dataclass(frozen=True)
class ClaudeModel:
    input_usd_per_mtok: float
    output_usd_per_mtok: float


# List prices, USD per million tokens (PRICES_AS_OF, PRICE_SOURCE). Dated ids (claude-sonnet-4-5-20250929)
# resolve to their alias. claude-sonnet-4-5 and claude-opus-4-5 are deprecated (retire 2026-11-30 and
# 2027-01-22, per the anthropic SDK's DEPRECATED_MODELS).
CLAUDE_MODELS: dict[str, ClaudeModel] = {
    "claude-sonnet-5-5": ClaudeModel(2.00, 10.00),
    "claude-sonnet-5": ClaudeModel(2.00, 10.00),
    "claude-opus-5-5": ClaudeModel(4.00, 20.00),
    "claude-opus-5": ClaudeModel(5.00, 25.00),
    "claude-fable-5-1": ClaudeModel(10.00, 50.00),
    "claude-fable-5": ClaudeModel(10.00, 50.00),
    "claude-opus-4-8": ClaudeModel(5.00, 25.00),
    "claude-opus-4-7": ClaudeModel(5.00, 25.00),
    "claude-opus-4-6": ClaudeModel(5.00, 25.00),
    "claude-sonnet-4-6": ClaudeModel(3.00, 15.00),
    "claude-opus-4-5": ClaudeModel(5.00, 25.00),
    "claude-sonnet-4-5": ClaudeModel(3.00, 15.00),
    "claude-haiku-4-5": ClaudeModel(1.00, 5.00),
}


def claude_model(model: str) -> ClaudeModel | None:
    return CLAUDE_MODELS.get(model) or CLAUDE_MODELS.get(re.sub(r"-\d{8}$", "", model))


def cost_usd(model: str, input_tokens: int, output_tokens: int, batch: bool = False) -> float | None:
    """List-price cost of a reply; None for a model without a price on file (self-hosted or unknown)."""
    card = claude_model(model)
    if card is None:
        return None
    dollars = (input_tokens * card.input_usd_per_mtok + output_tokens * card.output_usd_per_mtok) / 1e6
    return dollars * (BATCH_DISCOUNT if batch else 1.0)


@dataclass(frozen=True)
class ImagePart:
    """An image as the judge receives it; `sha256` (of the bytes sent) is what the cache key holds."""

    media_type: str
    data_b64: str = field(repr=False)
    sha256: str
    width: int
    height: int

    @property
    def tokens(self) -> int:
        return math.ceil(self.width * self.height / IMAGE_PIXELS_PER_TOKEN)

    @classmethod
    def from_bytes(cls, data: bytes, media_type: str | None = None) -> "ImagePart":
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            kind = (image.format or "").upper()
            scale = min(1.0, MAX_IMAGE_EDGE / max(width, height), math.sqrt(MAX_IMAGE_PIXELS / (width * height)))
            if scale < 1.0 or kind not in ("JPEG", "PNG", "GIF", "WEBP"):
                # The judge would downsize it anyway; sending it smaller keeps batches small.
                width, height = max(1, int(width * scale)), max(1, int(height * scale))
                buffer = io.BytesIO()
                image.convert("RGB").resize((width, height), Image.LANCZOS).save(buffer, format="JPEG", quality=90)
                data, media_type = buffer.getvalue(), "image/jpeg"
            else:
                media_type = media_type or f"image/{kind.lower()}"
        return cls(media_type, base64.b64encode(data).decode("ascii"), hashlib.sha256(data).hexdigest(), width, height)


def page_image(path: str | Path) -> ImagePart:
    """A page as the judge sees it: the same normalised bytes the model was sent (data_adapters.images:
    the file itself for an upright 8-bit JPEG or PNG, else a lossless PNG of the upright pixels)."""
    from data_adapters.images import page_bytes

    data, media_type = page_bytes(path)
    return ImagePart.from_bytes(data, media_type)


Part = str | ImagePart


@dataclass(frozen=True)
class JudgeRequest:
    """What to ask: the prompt (text and images, in order) and the schema the answer must follow."""

    metric: str
    settings: dict  # what shapes the prompt besides its text: criteria, steps, prompt version
    parts: tuple[Part, ...]
    schema: type[BaseModel] | None = None

    @property
    def text(self) -> str:
        return "".join(p if isinstance(p, str) else "[image]" for p in self.parts)

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.parts if isinstance(p, ImagePart)]


@dataclass
class Reply:
    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    stop_reason: str | None = None
    source: str = "api"  # "api", "batch" or "cache"
    raw: str | None = None  # the whole response, kept when it has no text to show


JUDGE_SCORE_RANGE = (0, 10)  # GEval's scale without a rubric (deepeval's get_score_range); the rubric's is 0-10 too


class JudgeUnscored(Exception):
    """The judge gave no usable answer; `raw` keeps what it did say (a reply or an error body)."""

    def __init__(self, message: str, raw: str | None = None):
        super().__init__(message)
        self.message, self.raw = message, raw

    def __str__(self) -> str:
        return self.message if self.raw is None else f"{self.message}; raw reply: {self.raw[:300]!r}"


class JudgeReplyError(JudgeUnscored):
    """A reply that is not valid JSON for the schema."""


class JudgeCallError(JudgeUnscored):
    """A call that failed for good: a non-retryable error, or still failing after every retry."""


def parse_reply(text: str, schema: type[BaseModel] | None, stop_reason: str | None = None):
    """The validated answer, or JudgeReplyError. With no schema the text itself is the answer."""
    if stop_reason == "max_tokens":
        raise JudgeReplyError("the reply was cut at max_tokens", raw=text)
    if stop_reason == "refusal":
        raise JudgeReplyError("the judge refused to answer", raw=text)
    if schema is None:
        return text
    stripped = text.strip()
    if not stripped:
        raise JudgeReplyError("the reply is empty", raw=text)
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, flags=re.S)
    candidates = [fenced.group(1) if fenced else stripped]
    start, end = stripped.find("{"), stripped.rfind("}")
    if start != -1 and end > start:
        candidates.append(stripped[start : end + 1])  # JSON inside prose, from a model without JSON outputs
    problem = "no JSON object in the reply"
    for candidate in candidates:
        try:
            answer = schema.model_validate(json.loads(candidate))
        except json.JSONDecodeError as exc:
            problem = f"not valid JSON ({exc.msg} at character {exc.pos})"
            continue
        except ValidationError as exc:
            first = exc.errors()[0]
            problem = f"JSON does not match {schema.__name__}: {'.'.join(map(str, first['loc'])) or '(root)'} {first['msg']}"
            break
        score = getattr(answer, "score", None)
        low, high = JUDGE_SCORE_RANGE
        if isinstance(score, (int, float)) and not low <= score <= high:
            # GEval's schema has an unbounded score: 99 is valid JSON for it, yet no grade. An error (never
            # cached), so the sample is asked again on the next run, not scored from a bad reply forever.
            raise JudgeReplyError(f"score {score:g} is outside the judge's {low}-{high} scale", raw=text)
        return answer
    raise JudgeReplyError(problem, raw=text)


def parse_checked(reply: Reply, schema: type[BaseModel] | None):
    """parse_reply, keeping the whole response as the raw text when the reply had no text."""
    try:
        return parse_reply(reply.text, schema, reply.stop_reason)
    except JudgeReplyError as exc:
        if not reply.text and reply.raw:
            exc.raw = reply.raw
        raise


def request_key(request: JudgeRequest, provider: str, model: str, temperature: float | None) -> str:
    """Identifies a reply: same key, same question to the same judge."""
    payload = {
        "v": PROTOCOL_VERSION,
        "provider": provider,
        "model": model,
        "temperature": temperature,
        "metric": request.metric,
        "settings": request.settings,
        "parts": [p if isinstance(p, str) else {"image_sha256": p.sha256} for p in request.parts],
        "schema": request.schema.model_json_schema() if request.schema else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class JudgeCache:
    """Validated replies on disk (SQLite: safe for several processes, e.g. `deepeval test run -n 4`)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        from vlm3.core.jsonio import refuse_link

        refuse_link(self.path)  # SQLite writes through a link: a planted one would let it overwrite any file
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, metric TEXT, text TEXT, "
                "input_tokens INTEGER, output_tokens INTEGER, stop_reason TEXT, source TEXT, created TEXT)"
            )
            # Message batches submitted and not yet collected: a restart polls these instead of paying again.
            self._db.execute("CREATE TABLE IF NOT EXISTS batches (batch_id TEXT PRIMARY KEY, keys TEXT, created TEXT)")

    def save_batch(self, batch_id: str, keys: list[str]) -> None:
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?)", (batch_id, json.dumps(keys), created))

    def pending_batches(self) -> list[tuple[str, list[str]]]:
        with self._lock:
            rows = self._db.execute("SELECT batch_id, keys FROM batches ORDER BY created").fetchall()
        return [(batch_id, json.loads(keys)) for batch_id, keys in rows]

    def forget_batch(self, batch_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM batches WHERE batch_id = ?", (batch_id,))

    def get(self, key: str) -> Reply | None:
        with self._lock:
            row = self._db.execute(
                "SELECT text, input_tokens, output_tokens, stop_reason FROM replies WHERE key = ?", (key,)
            ).fetchone()
        return Reply(row[0], row[1], row[2], row[3], source="cache") if row else None

    def put(self, key: str, model: str, metric: str, reply: Reply) -> None:
        created = datetime.now(timezone.utc).isoformat(timespec="seconds")
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, model, metric, reply.text, reply.input_tokens, reply.output_tokens, reply.stop_reason, reply.source, created),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


DEFAULT_DOCUMENT = "the manual"  # the recipe's eval.document when it names none


@dataclass(frozen=True)
class JudgeSettings:
    """How this run reaches the judge: the recipe's judge (harness.judge.JudgeConfig) plus what only the environment knows."""

    provider: str = "anthropic"
    model: str = "claude-sonnet-5-5"
    api_key: str = field(default="", repr=False)  # never printed, never written
    base_url: str | None = None
    concurrency: int = 4
    images: bool = True  # whether the judge is sent page images
    timeout_s: float = 120.0  # per attempt
    max_retries: int = 6
    backoff_s: float = 1.0  # first wait when the server gives no retry-after; doubles each retry
    max_backoff_s: float = 60.0
    batch_poll_s: float = 30.0
    batch_max_wait_s: float = 25 * 3600.0  # a batch expires after 24 h
    max_tokens: int = JUDGE_MAX_TOKENS
    document: str = DEFAULT_DOCUMENT  # what the pages are from, as the metrics' prompts name it (eval.document)

    @classmethod
    def from_spec(cls, spec, api_key: str, **overrides: Any) -> "JudgeSettings":
        values = dict(provider=spec.provider, model=spec.model, api_key=api_key, base_url=spec.base_url,
                      concurrency=spec.concurrency, images=spec.provider == "anthropic")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> "JudgeSettings":
        return type(self)(**{f.name: changes.get(f.name, getattr(self, f.name)) for f in fields(self)})

    @property
    def temperature(self) -> float | None:
        return OPENAI_TEMPERATURE if self.provider == "openai" else None


@dataclass
class JudgeUsage:
    calls: int = 0  # requests the judge answered or that failed for good (direct and batch; retries not counted)
    attempts: int = 0  # HTTP attempts, retries included
    retries: int = 0
    failed_calls: int = 0
    cache_hits: int = 0
    batches: int = 0
    batch_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0

    def to_dict(self) -> dict:
        data = dict(self.__dict__)
        data["cost_usd"] = None if self.cost_usd is None else round(self.cost_usd, 6)
        return data


def _retry_after_s(response) -> float | None:
    headers = getattr(response, "headers", None) or {}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) / scale
        except (TypeError, ValueError):
            continue
    return None


def classify_error(exc: BaseException) -> tuple[bool, float | None, str | None]:
    """(retryable, server's retry-after in seconds, raw error body) for an SDK exception."""
    import anthropic
    import openai

    status = getattr(exc, "status_code", None)
    if isinstance(exc, (anthropic.APIStatusError, openai.APIStatusError)) and status is not None:
        response = getattr(exc, "response", None)
        try:
            raw = response.text if response is not None else None
        except Exception:  # noqa: BLE001 - a body that cannot be read is simply not kept
            raw = None
        return status in (408, 409, 429) or status >= 500, _retry_after_s(response), raw
    if isinstance(exc, (anthropic.APIConnectionError, openai.APIConnectionError)):
        return True, None, None  # timeouts (APITimeoutError is a subclass) and dropped connections
    return False, None, None


def _is_schema_rejection(exc: BaseException) -> bool:
    message = str(exc).lower()
    return getattr(exc, "status_code", None) == 400 and any(k in message for k in ("output_config", "response_format", "json_schema", "schema"))


class AnthropicTransport:
    """Claude's Messages and Message Batches APIs through the official SDK.

    No temperature is sent: the anthropic SDK 2.x has no such parameter, and Claude Opus 4.7 and later and
    Sonnet 5 and later return 400 for a non-default one. Scores are reproducible through the cache instead.
    No thinking setting either: Sonnet 5.5 rejects `thinking: disabled`; max_tokens leaves room for it."""

    def __init__(self, settings: JudgeSettings, client=None):
        import anthropic

        self.settings = settings
        self.client = client or anthropic.Anthropic(
            api_key=settings.api_key, base_url=settings.base_url, max_retries=0, timeout=settings.timeout_s
        )
        self.structured = True

    def params(self, request: JudgeRequest) -> dict:
        content: list[dict] = []
        for part in request.parts:
            if isinstance(part, ImagePart):
                content.append({"type": "image", "source": {"type": "base64", "media_type": part.media_type, "data": part.data_b64}})
            elif part.strip():  # the API rejects whitespace-only text blocks
                content.append({"type": "text", "text": part})
        params: dict[str, Any] = {
            "model": self.settings.model,
            "max_tokens": self.settings.max_tokens,
            "messages": [{"role": "user", "content": content}],
        }
        if request.schema is not None and self.structured:
            from anthropic import transform_schema

            params["output_config"] = {"format": {"type": "json_schema", "schema": transform_schema(request.schema)}}
        return params

    def send(self, request: JudgeRequest) -> Reply:
        import anthropic

        try:
            message = self.client.messages.create(**self.params(request))
        except anthropic.BadRequestError as exc:
            if not (self.structured and request.schema is not None and _is_schema_rejection(exc)):
                raise
            self.structured = False  # this model takes no JSON schema: read the JSON from its text from now on
            message = self.client.messages.create(**self.params(request))
        return reply_from_message(message)

    def submit_batch(self, items: list[tuple[str, JudgeRequest]]) -> str:
        batch = self.client.messages.batches.create(
            requests=[{"custom_id": custom_id, "params": self.params(request)} for custom_id, request in items]
        )
        return batch.id

    def batch_ended(self, batch_id: str) -> bool:
        return self.client.messages.batches.retrieve(batch_id).processing_status == "ended"

    def cancel_batch(self, batch_id: str) -> None:
        self.client.messages.batches.cancel(batch_id)

    def batch_results(self, batch_id: str) -> Iterable[tuple[str, Reply | JudgeUnscored]]:
        for item in self.client.messages.batches.results(batch_id):
            result = item.result
            if result.type == "succeeded":
                reply = reply_from_message(result.message)
                reply.source = "batch"
                yield item.custom_id, reply
            elif result.type == "errored":
                yield item.custom_id, JudgeCallError("the batch request errored", raw=result.error.model_dump_json())
            else:
                yield item.custom_id, JudgeCallError(f"the batch request was {result.type}")


class BatchWaitStopped(Exception):
    """The wait for message batches was stopped (Ctrl-C); they run on and are saved for a restart."""

    def __init__(self, batch_ids: list[str]):
        self.batch_ids = list(batch_ids)
        super().__init__(f"stopped waiting for message batch(es) {', '.join(self.batch_ids) or '-'}")


def reply_from_message(message) -> Reply:
    """The text blocks of a Claude message (thinking blocks skipped) and its usage."""
    text = "".join(block.text for block in message.content or [] if getattr(block, "type", None) == "text")
    usage = message.usage
    return Reply(text, usage.input_tokens or 0, usage.output_tokens or 0, message.stop_reason,
                 raw=None if text else message.model_dump_json())


class OpenAITransport:
    """Any OpenAI-compatible chat endpoint (a larger model served with vLLM, for example)."""

    def __init__(self, settings: JudgeSettings, client=None):
        import openai

        self.settings = settings
        self.client = client or openai.OpenAI(
            api_key=settings.api_key or "EMPTY", base_url=settings.base_url, max_retries=0, timeout=settings.timeout_s
        )
        self.structured = True

    def params(self, request: JudgeRequest) -> dict:
        content: list[dict] = []
        for part in request.parts:
            if isinstance(part, ImagePart):
                content.append({"type": "image_url", "image_url": {"url": f"data:{part.media_type};base64,{part.data_b64}"}})
            elif part.strip():
                content.append({"type": "text", "text": part})
        # No max_tokens: a self-hosted judge's context may be smaller than JUDGE_MAX_TOKENS; vLLM then
        # allows the rest of the context, and a reply cut short ("length") is unscored, never truncated JSON.
        params: dict[str, Any] = {
            "model": self.settings.model,
            "messages": [{"role": "user", "content": content}],
            "temperature": OPENAI_TEMPERATURE,
        }
        if request.schema is not None and self.structured:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema.__name__, "schema": request.schema.model_json_schema()},
            }
        return params

    def send(self, request: JudgeRequest) -> Reply:
        import openai

        try:
            response = self.client.chat.completions.create(**self.params(request))
        except openai.BadRequestError as exc:
            if not (self.structured and request.schema is not None and _is_schema_rejection(exc)):
                raise
            self.structured = False
            response = self.client.chat.completions.create(**self.params(request))
        usage = response.usage
        tokens = (usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0)
        if not response.choices:
            return Reply("", *tokens, None, raw=response.model_dump_json())
        choice = response.choices[0]
        stop = {"length": "max_tokens", "content_filter": "refusal"}.get(choice.finish_reason, choice.finish_reason)
        text = choice.message.content or ""
        return Reply(text, *tokens, stop, raw=None if text else response.model_dump_json())


def make_transport(settings: JudgeSettings, client=None):
    return (OpenAITransport if settings.provider == "openai" else AnthropicTransport)(settings, client)


BATCH_LOST = object()  # _run_batch's answer for a batch the provider no longer has


class JudgeClient:
    """Cache, then the API with bounded concurrency and retries; every call and token is counted."""

    def __init__(self, settings: JudgeSettings, cache: JudgeCache | None = None, transport=None,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.cache = cache
        self.transport = transport or make_transport(settings)
        self.usage = JudgeUsage()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(settings.concurrency)
        self._executor = ThreadPoolExecutor(max_workers=settings.concurrency + 2, thread_name_prefix="judge")
        self._preloaded: dict[str, Reply | JudgeUnscored] = {}  # answers fetched by a batch in this run
        self._stop = threading.Event()  # set by stop_waiting(): a batch wait ends at once (Ctrl-C)
        self.waiting_on: list[str] = []  # batch ids submitted or resumed and not yet collected

    def stop_waiting(self) -> None:
        """End any batch wait now; the batches keep running at the provider and stay saved for a restart."""
        self._stop.set()

    def _wait(self, seconds: float) -> None:
        if self._stop.wait(seconds if self._sleep is time.sleep else 0):
            raise BatchWaitStopped(self.waiting_on)
        if self._sleep is not time.sleep:
            self._sleep(seconds)

    @property
    def sees_images(self) -> bool:
        return self.settings.images

    @property
    def has_price(self) -> bool:
        return claude_model(self.settings.model) is not None and self.settings.provider == "anthropic"

    def key(self, request: JudgeRequest) -> str:
        return request_key(request, self.settings.provider, self.settings.model, self.settings.temperature)

    def ask(self, request: JudgeRequest) -> tuple[Any, Reply]:
        """(validated answer, reply); JudgeUnscored when there is none."""
        key = self.key(request)
        preloaded = self._preloaded.get(key)
        if isinstance(preloaded, JudgeUnscored):
            raise preloaded
        if preloaded is not None:
            return parse_reply(preloaded.text, request.schema, preloaded.stop_reason), preloaded
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            try:
                answer = parse_reply(cached.text, request.schema, cached.stop_reason)
            except JudgeReplyError:
                pass  # cached by an older vlm3 that kept out-of-range scores: asked again, and replaced below
            else:
                with self._lock:
                    self.usage.cache_hits += 1
                return answer, cached
        reply = self._call_with_retries(request)
        self._account(reply)
        answer = parse_checked(reply, request.schema)  # raises before anything is cached
        if self.cache is not None:
            self.cache.put(key, self.settings.model, request.metric, reply)
        return answer, reply

    async def a_ask(self, request: JudgeRequest) -> tuple[Any, Reply]:
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(self._executor, self.ask, request)

    def _account(self, reply: Reply) -> None:
        batch = reply.source == "batch"
        cost = cost_usd(self.settings.model, reply.input_tokens, reply.output_tokens, batch=batch) if self.has_price else None
        with self._lock:
            self.usage.calls += 1
            self.usage.input_tokens += reply.input_tokens
            self.usage.output_tokens += reply.output_tokens
            self.usage.cost_usd = None if cost is None or self.usage.cost_usd is None else self.usage.cost_usd + cost

    def _backoff_s(self, retry: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.settings.max_backoff_s))
        delay = min(self.settings.backoff_s * 2**retry, self.settings.max_backoff_s)
        return delay * (0.75 + 0.25 * random.random())  # jitter: concurrent callers do not retry in step

    def with_retries(self, send: Callable[[], Any], what: str) -> Any:
        """send() until it succeeds, at most 1 + max_retries attempts, holding one concurrency slot per attempt."""
        for retry in range(self.settings.max_retries + 1):
            with self._slots:
                try:
                    result = send()
                    with self._lock:
                        self.usage.attempts += 1
                    return result
                except JudgeUnscored:
                    with self._lock:
                        self.usage.attempts += 1
                    raise
                except Exception as exc:  # noqa: BLE001 - classified below; the SDKs raise many types
                    with self._lock:
                        self.usage.attempts += 1
                    retryable, retry_after, raw = classify_error(exc)
                    if not retryable or retry == self.settings.max_retries:
                        attempts = f"after {retry + 1} attempts" if retryable else "(not retryable)"
                        raise JudgeCallError(f"{what} failed {attempts}: {type(exc).__name__}: {exc}"[:500], raw=raw) from exc
            with self._lock:
                self.usage.retries += 1
            self._sleep(self._backoff_s(retry, retry_after))
        raise AssertionError("unreachable")

    def _call_with_retries(self, request: JudgeRequest) -> Reply:
        try:
            return self.with_retries(lambda: self.transport.send(request), f"judge call ({request.metric})")
        except JudgeCallError:
            with self._lock:
                self.usage.calls += 1
                self.usage.failed_calls += 1
            raise

    def prefill_batch(self, requests: list[JudgeRequest], on_progress: Callable[[str], None] | None = None) -> int:
        """Ask every uncached request through the Message Batches API (half price); later ask() calls read
        the answers from memory. Returns how many requests were sent."""
        todo: dict[str, JudgeRequest] = {}
        for request in requests:
            key = self.key(request)
            if key not in self._preloaded and key not in todo and not (self.cache is not None and self.cache.get(key)):
                todo[key] = request
        asked = len(todo)
        # Batches an interrupted run submitted and never collected: collect them, never pay for them twice.
        for batch_id, keys in self.cache.pending_batches() if self.cache is not None else []:
            chunk = [(key, todo.pop(key)) for key in keys if key in todo]
            if not chunk:
                self.cache.forget_batch(batch_id)  # nothing of it is still needed
                continue
            if on_progress:
                on_progress(f"batch {batch_id}: resuming, {len(chunk)} requests")
            if self._run_batch(chunk, on_progress, batch_id=batch_id) is BATCH_LOST:
                todo.update(chunk)  # back in the pending pool: submitted again below
        for chunk in _batch_chunks(list(todo.items()), lambda r: self.transport.params(r)):
            self._run_batch(chunk, on_progress)
        return asked

    def _run_batch(self, chunk: list[tuple[str, JudgeRequest]], on_progress, batch_id: str | None = None) -> object:
        """Submit (or, with batch_id, resume) one batch, wait for it and read its results. The batch id and
        its request keys are saved before any wait, and forgotten once the results are in, or once the
        provider says it no longer has the batch (BATCH_LOST is returned; its requests are unanswered)."""
        resumed = batch_id is not None
        transport = self.transport
        if batch_id is None:
            try:
                batch_id = self.with_retries(lambda: transport.submit_batch(chunk), "creating a message batch")
            except JudgeCallError as exc:
                for key, _ in chunk:
                    self._preloaded[key] = exc
                return
            if self.cache is not None:
                self.cache.save_batch(batch_id, [key for key, _ in chunk])
            with self._lock:
                self.usage.batches += 1
                self.usage.batch_requests += len(chunk)
            if on_progress:
                on_progress(f"batch {batch_id}: {len(chunk)} requests submitted")
        self.waiting_on.append(batch_id)
        started = time.monotonic()
        try:
            while not self.with_retries(lambda: transport.batch_ended(batch_id), "polling a message batch"):
                if time.monotonic() - started > self.settings.batch_max_wait_s:
                    self.with_retries(lambda: transport.cancel_batch(batch_id), "cancelling a message batch")
                    raise JudgeCallError(f"batch {batch_id} did not end within {self.settings.batch_max_wait_s:.0f} s")
                self._wait(self.settings.batch_poll_s)
            results = self.with_retries(lambda: list(transport.batch_results(batch_id)), "reading batch results")
        except JudgeCallError as exc:
            if not is_not_found(exc):
                for key, _ in chunk:
                    self._preloaded[key] = exc
                return None
            # Expired past retention, deleted, or another workspace's: polling it again would fail forever
            # and leave its samples unscored forever. Forget it; its requests go back to the pending pool.
            self.waiting_on.remove(batch_id)
            if self.cache is not None:
                self.cache.forget_batch(batch_id)
            again = "submitted again now" if resumed else "submitted again by the next run of the same command"
            if on_progress:
                on_progress(f"batch {batch_id}: the provider no longer has it (HTTP 404); its {len(chunk)} requests are {again}")
            if not resumed:
                for key, _ in chunk:
                    self._preloaded[key] = JudgeCallError(f"batch {batch_id}: the provider no longer has it; {again}")
            return BATCH_LOST
        self.waiting_on.remove(batch_id)
        requests = dict(chunk)
        for key, outcome in results:
            request = requests.get(key)
            if request is None:
                continue
            if isinstance(outcome, JudgeUnscored):
                with self._lock:
                    self.usage.calls += 1
                    self.usage.failed_calls += 1
                self._preloaded[key] = outcome
                continue
            self._account(outcome)
            try:
                parse_checked(outcome, request.schema)
            except JudgeReplyError as exc:
                self._preloaded[key] = exc
                continue
            if self.cache is not None:
                self.cache.put(key, self.settings.model, request.metric, outcome)
            self._preloaded[key] = outcome
        for key in requests.keys() - {key for key, _ in results}:
            self._preloaded[key] = JudgeCallError(f"batch {batch_id} returned no result for this request")
        if self.cache is not None:
            self.cache.forget_batch(batch_id)  # its answers are in the cache now

    def cancel_saved_batches(self, on_skip: Callable[[str], None] | None = None) -> list[str]:
        """Cancel every batch an interrupted run left running (only when the user asks); returns their ids.
        A batch the provider no longer has is forgotten, not cancelled: on_skip(line) says so."""
        cancelled = []
        for batch_id, _ in self.cache.pending_batches() if self.cache is not None else []:
            try:
                self.with_retries(lambda: self.transport.cancel_batch(batch_id), "cancelling a message batch")
            except JudgeCallError as exc:
                if not is_not_found(exc):
                    raise
                self.cache.forget_batch(batch_id)
                if on_skip:
                    on_skip(f"batch {batch_id}: the provider no longer has it (HTTP 404); forgotten, nothing to cancel")
                continue
            self.cache.forget_batch(batch_id)
            cancelled.append(batch_id)
        return cancelled

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def is_not_found(exc: JudgeCallError) -> bool:
    """The call failed with HTTP 404: the provider does not have what was asked for (a lost batch)."""
    return getattr(exc.__cause__, "status_code", None) == 404


def _batch_chunks(items: list[tuple[str, JudgeRequest]], params: Callable[[JudgeRequest], dict]):
    chunk: list[tuple[str, JudgeRequest]] = []
    size = 0
    for key, request in items:
        item_size = len(json.dumps(params(request)))
        if chunk and (len(chunk) >= MAX_BATCH_REQUESTS or size + item_size > MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append((key, request))
        size += item_size
    if chunk:
        yield chunk
