"""Bulk generation against any OpenAI-compatible endpoint (vLLM, `transformers serve`, ...).

Usage:
    stats = asyncio.run(generate(samples, GenerationSettings(base_url, api_key, model), Path("eval/x/predictions.jsonl")))

Each answer is appended to predictions.jsonl the moment it arrives, keyed by sample id,
model and prompt hash: a run that is interrupted and started again asks only for what is
missing (or failed) and loses nothing. Retries with backoff on 429, 5xx, timeouts and
dropped connections are the official `openai` client's own (max_retries).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import mimetypes
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from harness.samples import EvalSample

TEMPERATURE = 0.0  # deterministic answers: scores compare models, not sampling luck


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


@dataclass
class GenerationStats:
    total: int = 0
    skipped: int = 0  # already answered by an earlier run
    requested: int = 0
    answered: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {"errors": self.errors[:20]}


def image_data_url(path: str) -> str:
    mime = mimetypes.guess_type(path)[0] or "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(Path(path).read_bytes()).decode('ascii')}"


def build_messages(sample: EvalSample, system_prompt: str | None = None) -> list[dict]:
    """The image first, then the question: the order the model was trained on (with the row's own system turn)."""
    messages: list[dict] = []
    system_prompt = getattr(sample, "system", None) or system_prompt
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    # A later turn of a multi-turn row: the earlier exchanges come first, the image in the first user turn.
    history = list(getattr(sample, "history", None) or [])
    first_question = history[0]["content"] if history else sample.question
    messages.append(
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": image_data_url(sample.image)}},
                {"type": "text", "text": first_question},
            ],
        }
    )
    if history:
        messages += [{"role": turn["role"], "content": turn["content"]} for turn in history[1:]]
        messages.append({"role": "user", "content": sample.question})
    return messages


def prompt_hash(sample: EvalSample, settings: GenerationSettings) -> str:
    """Changes when anything that shapes the answer changes: image bytes, question, system prompt, limits."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(Path(sample.image).read_bytes()).digest())
    system = getattr(sample, "system", None) or settings.system_prompt
    history = list(getattr(sample, "history", None) or [])
    # The earlier turns shape the answer too; a first turn hashes as before, so saved answers still match.
    digest.update(json.dumps([sample.question, system, settings.max_tokens, TEMPERATURE] + ([history] if history else [])).encode())
    return digest.hexdigest()[:16]


def prediction_key(record: dict) -> tuple[str, str, str]:
    return record["id"], record["model"], record["prompt_hash"]


def read_predictions(path: Path) -> list[dict]:
    """Every complete record; a line torn by an interruption is ignored (it is asked again)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and {"id", "model", "prompt_hash"} <= record.keys():
            records.append(record)
    return records


def latest_answers(path: Path) -> dict[tuple[str, str, str], dict]:
    """The newest successful record per key (a later retry supersedes an earlier error)."""
    answers: dict[tuple[str, str, str], dict] = {}
    for record in read_predictions(path):
        if record.get("error") is None and record.get("answer") is not None:
            answers[prediction_key(record)] = record
    return answers


def repair_torn_tail(path: Path) -> None:
    """An interrupted write can leave a last line without its newline: a complete record gets its
    newline, a torn one is cut off (it is asked again), so the file stays valid JSONL for every reader."""
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as handle:
            data = handle.read()
            if data.endswith(b"\n"):
                return
            start = data.rfind(b"\n") + 1
            try:
                json.loads(data[start:])
            except ValueError:
                handle.truncate(start)
            else:
                handle.write(b"\n")


def describe_error(exc: BaseException) -> str:
    """The client's error and its root cause: "Request timed out." alone hides a dropped connection."""
    root = exc
    for _ in range(10):  # a cause chain is short; the bound guards against a cycle
        if root.__cause__ is None:
            break
        root = root.__cause__
    text = f"{type(exc).__name__}: {exc}"
    return text if root is exc else f"{text} ({type(root).__name__}: {root})"


async def ask(client, sample: EvalSample, settings: GenerationSettings, key_hash: str) -> dict:
    started = time.perf_counter()
    record = {"id": sample.id, "model": settings.model, "prompt_hash": key_hash, "answer": None, "error": None}
    try:
        response = await client.chat.completions.create(
            model=settings.model,
            messages=build_messages(sample, settings.system_prompt),
            temperature=TEMPERATURE,
            max_tokens=settings.max_tokens,
        )
        choice = response.choices[0]
        record.update(
            answer=choice.message.content or "",
            finish_reason=choice.finish_reason,
            usage=response.usage.model_dump() if response.usage else None,
        )
    except Exception as exc:  # noqa: BLE001 - after the client's retries, any failure is recorded, not raised
        record["error"] = describe_error(exc)[:500]
    record["latency_s"] = round(time.perf_counter() - started, 3)
    record["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


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
        http_client = openai.DefaultAioHttpClient(limits=limits, timeout=settings.timeout_s)
    except (AttributeError, RuntimeError):
        http_client = openai.DefaultAsyncHttpxClient(limits=limits, timeout=settings.timeout_s)
    return openai.AsyncOpenAI(
        base_url=settings.base_url,
        api_key=settings.api_key,
        timeout=settings.timeout_s,
        max_retries=settings.max_retries,
        http_client=http_client,
    )


async def generate(
    samples: list[EvalSample],
    settings: GenerationSettings,
    out_path: Path,
    on_progress: Callable[[GenerationStats], None] | None = None,
) -> GenerationStats:
    """Ask for every sample not yet answered; append each record as it arrives."""
    started = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    repair_torn_tail(out_path)
    done = latest_answers(out_path)
    stats = GenerationStats(total=len(samples))
    todo: list[tuple[EvalSample, str]] = []
    for sample in samples:
        key_hash = prompt_hash(sample, settings)
        if (sample.id, settings.model, key_hash) in done:
            stats.skipped += 1
        else:
            todo.append((sample, key_hash))
    stats.requested = len(todo)
    if on_progress:
        on_progress(stats)
    if not todo:
        stats.seconds = time.perf_counter() - started
        return stats

    client = make_client(settings)
    gate = asyncio.Semaphore(settings.concurrency)

    async def bounded(sample: EvalSample, key_hash: str) -> dict:
        async with gate:
            return await ask(client, sample, settings, key_hash)

    try:
        with out_path.open("a", encoding="utf-8") as out:
            for finished in asyncio.as_completed([bounded(s, h) for s, h in todo]):
                record = await finished
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
                if record["error"] is None:
                    stats.answered += 1
                else:
                    stats.failed += 1
                    stats.errors.append(f"{record['id']}: {record['error']}")
                if on_progress:
                    on_progress(stats)
    finally:
        await client.close()
    stats.seconds = time.perf_counter() - started
    return stats
