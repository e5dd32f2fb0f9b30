"""Bulk generation against any OpenAI-compatible endpoint (vLLM, `transformers serve`, ...).

Usage:
    stats = asyncio.run(generate(samples, GenerationSettings(base_url, api_key, model), Path("eval/x/predictions.jsonl")))

Each answer is appended to predictions.jsonl the moment it arrives, keyed by sample id,
endpoint, model name, weights identity and prompt hash, and stamped with the model the server
says answered: a run that is interrupted and started again asks only for what is missing (or
failed) and loses nothing, and an answer from another endpoint or other weights is never reused
(it stays in the file, counted in `foreign`). When there is something to ask and saved answers
to reuse, the first request goes alone: a saved answer whose server-reported model differs from
the one this request reports is asked again.

Retries with backoff on 429, 5xx, timeouts and dropped connections are the official `openai`
client's own (max_retries); each attempt, its body included, is bounded by the timeout
(`bounded_attempts`) and a whole request, retries included, by `request_deadline_s`, so a server
that trickles a byte at a time cannot hold a run.
A request that fails after retries, or answers without usable content, is an error record
with the server's message (control characters stripped, the key redacted, truncated): never
an answer, so it is never scored as a wrong one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from vlm3.core.jsonio import link_refusal, open_no_follow
from data_adapters.samples import EvalSample
from vlm3.serve.client import MAX_ANSWER_CHARS, GenerationSettings, image_data_url, make_client, redact  # noqa: F401

TEMPERATURE = 0.0  # deterministic answers: scores compare models, not sampling luck
ERROR_CHARS = 500  # an error message kept in predictions.jsonl: the server's first words say what went wrong
# ANSI/VT escape sequences (CSI, OSC, two-byte ESC x) and every other C0/C1 control except tab and newline.
# A lone UTF-16 surrogate: valid JSON ("\\ud800"), not valid Unicode, so it cannot be written as UTF-8.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-_]?|[\x00-\x08\x0b-\x1f\x7f-\x9f]")


@dataclass
class GenerationStats:
    total: int = 0
    skipped: int = 0  # already answered by an earlier run
    foreign: int = 0  # saved answers for these samples from another endpoint, model or weights: kept, not reused
    reasked: int = 0  # saved answers whose server-reported model differs from today's: asked again
    requested: int = 0
    answered: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "errors"} | {"errors": self.errors[:20]}


def pages_of(sample: EvalSample) -> list[str]:
    """The sample's pages (absolute paths) in the order they are sent; [] for a text-only sample."""
    images = list(getattr(sample, "images", None) or [])
    return images or ([sample.image] if sample.image else [])


def build_messages(sample: EvalSample, system_prompt: str | None = None) -> list[dict]:
    """Every page in order, then the question: the order the model was trained on (with the row's own system turn).
    A text-only sample sends the question alone."""
    messages: list[dict] = []
    system_prompt = getattr(sample, "system", None) or system_prompt
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    # A later turn of a multi-turn row: the earlier exchanges come first; each user turn shows its own pages
    # (page_turns), as in training; without page_turns every page goes in the first user turn.
    turns = [*(getattr(sample, "history", None) or []), {"role": "user", "content": sample.question}]
    pages = iter(pages_of(sample))
    counts = iter(list(getattr(sample, "page_turns", None) or []) or [len(pages_of(sample))])
    for turn in turns:
        shown = [next(pages) for _ in range(next(counts, 0))] if turn["role"] == "user" else []
        if shown:
            parts = [{"type": "image_url", "image_url": {"url": image_data_url(page)}} for page in shown]
            messages.append({"role": "user", "content": [*parts, {"type": "text", "text": turn["content"]}]})
        else:
            messages.append({"role": turn["role"], "content": turn["content"]})
    return messages


def prompt_hash(sample: EvalSample, settings: GenerationSettings) -> str:
    """Changes when anything that shapes the answer changes: each page's bytes in order, question, system prompt, limits."""
    digest = hashlib.sha256()
    # One page hashes as it always did (saved answers still match); a text-only sample hashes no page.
    for page in pages_of(sample):
        digest.update(hashlib.sha256(Path(page).read_bytes()).digest())
    system = getattr(sample, "system", None) or settings.system_prompt
    history = list(getattr(sample, "history", None) or [])
    page_turns = list(getattr(sample, "page_turns", None) or [])
    # The earlier turns shape the answer too, and so does which turn shows which page; a first turn (all pages
    # in it) hashes as before, so saved answers still match.
    digest.update(json.dumps([sample.question, system, settings.max_tokens, TEMPERATURE] + ([history] if history else [])
                             + ([page_turns] if page_turns else [])).encode())
    return digest.hexdigest()[:16]


Key = tuple[str, str, str, str, str]  # (sample id, endpoint, model name, weights identity, prompt hash)


def prediction_key(record: dict) -> Key:
    """Records written before endpoints were part of the key read as endpoint "" and are never reused."""
    return (record["id"], record.get("endpoint") or "", record["model"], record.get("weights") or "", record["prompt_hash"])


def settings_key(sample_id: str, settings: GenerationSettings, key_hash: str) -> Key:
    return (sample_id, settings.endpoint, settings.model, settings.weights_id or "", key_hash)


def strip_controls(text: str) -> str:
    """Terminal control sequences removed: server text must not move a user's cursor or retitle the terminal."""
    return CONTROL.sub("", text)


def replace_lone_surrogates(text: str) -> str:
    """Each lone surrogate replaced by U+FFFD: a server's "\\ud800" would otherwise stop every write of the record."""
    return LONE_SURROGATE.sub("\ufffd", text)


def without_surrogates(value):
    """value with every string in it (keys too) cleaned of lone surrogates; a record of server text stays writable."""
    if isinstance(value, str):
        return replace_lone_surrogates(value)
    if isinstance(value, dict):
        return {without_surrogates(k): without_surrogates(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_surrogates(v) for v in value]
    return value


def clean_server_text(text: str, secrets: tuple[str, ...] = (), limit: int = ERROR_CHARS) -> str:
    """Server text made safe to store and print: keys redacted, control sequences and lone surrogates
    removed, cut to limit."""
    text = replace_lone_surrogates(strip_controls(redact(text, secrets)))
    return text if limit is None or len(text) <= limit else text[:limit] + " [...]"


def read_predictions(path: Path) -> list[dict]:
    """Every complete record; a line torn by an interruption is ignored (it is asked again)."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):  # torn, or not ours
            continue
        if isinstance(record, dict) and {"id", "model", "prompt_hash"} <= record.keys():
            records.append(without_surrogates(record))  # saved by an older vlm3: scores and reports must write it
    return records


def latest_answers(path: Path) -> dict[Key, dict]:
    """The newest successful record per key (a later retry supersedes an earlier error)."""
    answers: dict[Key, dict] = {}
    for record in read_predictions(path):
        if record.get("error") is None and record.get("answer") is not None:
            answers[prediction_key(record)] = record
    return answers


def repair_torn_tail(path: Path) -> None:
    """An interrupted write can leave a last line without its newline: a complete record gets its
    newline, a torn one is cut off (it is asked again), so the file stays valid JSONL for every reader."""
    if path.is_symlink():
        raise link_refusal(path)
    if path.exists() and path.stat().st_size:
        with open_no_follow(path, "rb+") as handle:
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
    body = getattr(exc, "body", None)
    if isinstance(body, str) and body.strip():
        # A body that is not JSON (an HTML error page from a proxy) is not in the client's message: add its start.
        text += f" - {body[:ERROR_CHARS]}"
    return text if root is exc else f"{text} ({type(root).__name__}: {root})"


def usable_content(response) -> tuple[str | None, str | None]:
    """(answer, None) from a chat completion, or (None, why) when the server gave nothing to score."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list):
        shown = response if isinstance(response, str) else type(response).__name__
        return None, f"the server's reply is not a chat completion: {shown}"
    if not choices:
        return None, "the server returned no choices"
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        refusal = getattr(message, "refusal", None)
        why = f"refusal: {refusal}" if refusal else f"finish_reason {getattr(choices[0], 'finish_reason', None)!r}"
        return None, f"the server returned no content ({why})"
    return content, None


async def ask(client, sample: EvalSample, settings: GenerationSettings, key_hash: str) -> dict:
    started = time.perf_counter()
    record = {"id": sample.id, "endpoint": settings.endpoint, "model": settings.model, "weights": settings.weights_id,
              "prompt_hash": key_hash, "served_model": None, "answer": None, "error": None}
    secrets = (settings.api_key,)
    try:
        response = await asyncio.wait_for(
            client.chat.completions.create(
                model=settings.model,
                messages=build_messages(sample, settings.system_prompt),
                temperature=TEMPERATURE,
                max_tokens=settings.max_tokens,
            ),
            timeout=settings.request_deadline_s,
        )
        answer, why = usable_content(response)
        if why is not None:
            record["error"] = clean_server_text(why, secrets)
        else:
            choice = response.choices[0]
            served = getattr(response, "model", None)
            record.update(
                answer=replace_lone_surrogates(redact(answer, secrets)[:MAX_ANSWER_CHARS]),  # redact, then cut: no piece of a key survives
                answer_chars=len(answer),  # more than the answer's length: it was cut at MAX_ANSWER_CHARS
                served_model=clean_server_text(served, secrets) if isinstance(served, str) else None,
                finish_reason=choice.finish_reason,
                usage=response.usage.model_dump() if getattr(response, "usage", None) else None,
            )
    except asyncio.TimeoutError:
        record["error"] = f"no complete answer within {settings.request_deadline_s:.0f} s (timeout {settings.timeout_s:g} s per attempt, {settings.max_retries} retries)"
    except Exception as exc:  # noqa: BLE001 - after the client's retries, any failure is recorded, not raised
        record["error"] = clean_server_text(describe_error(exc), secrets)
    record["latency_s"] = round(time.perf_counter() - started, 3)
    record["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def plan_generation(samples: list[EvalSample], settings: GenerationSettings, out_path: Path, stats: GenerationStats):
    """(saved answers this endpoint may reuse, samples to ask), each with its prompt hash; counts foreign answers."""
    done = latest_answers(out_path)
    saved_elsewhere = {(key[0], key[4]) for key in done}
    reusable: list[tuple[EvalSample, str, dict]] = []
    todo: list[tuple[EvalSample, str]] = []
    for sample in samples:
        key_hash = prompt_hash(sample, settings)
        record = done.get(settings_key(sample.id, settings, key_hash))
        if record is not None:
            reusable.append((sample, key_hash, record))
            continue
        if (sample.id, key_hash) in saved_elsewhere:
            stats.foreign += 1
        todo.append((sample, key_hash))
    return reusable, todo


async def generate(
    samples: list[EvalSample],
    settings: GenerationSettings,
    out_path: Path,
    on_progress: Callable[[GenerationStats], None] | None = None,
) -> GenerationStats:
    """Ask for every sample not yet answered by this endpoint and model; append each record as it arrives."""
    started = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    repair_torn_tail(out_path)
    stats = GenerationStats(total=len(samples))
    reusable, todo = plan_generation(samples, settings, out_path, stats)
    client = None
    try:
        with open_no_follow(out_path, "a") as out:

            def keep(record: dict) -> None:
                # Every field may hold server text (finish_reason, usage): none may stop the run.
                record = without_surrogates(record)
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
                if record["error"] is None:
                    stats.answered += 1
                else:
                    stats.failed += 1
                    stats.errors.append(f"{record['id']}: {record['error']}")
                if on_progress:
                    on_progress(stats)

            if todo:
                client = make_client(settings)
            if reusable and todo:
                # Which saved answers still belong to this server: the first request goes alone and the
                # model it reports decides (with nothing to ask, nothing new can mix in, and nothing is asked).
                sample, key_hash = todo.pop(0)
                first = await ask(client, sample, settings, key_hash)
                stats.requested += 1
                keep(first)
                served = first.get("served_model")
                if first["error"] is None and served is not None:
                    stale = [(s, h) for s, h, r in reusable if r.get("served_model") != served]
                    stats.reasked = len(stale)
                    reusable = [(s, h, r) for s, h, r in reusable if r.get("served_model") == served]
                    todo += stale
            stats.skipped = len(reusable)
            stats.requested += len(todo)
            if on_progress:
                on_progress(stats)
            if todo:
                gate = asyncio.Semaphore(settings.concurrency)

                async def bounded(sample: EvalSample, key_hash: str) -> dict:
                    async with gate:
                        return await ask(client, sample, settings, key_hash)

                for finished in asyncio.as_completed([bounded(s, h) for s, h in todo]):
                    keep(await finished)
    finally:
        if client is not None:
            await client.close()
    stats.seconds = time.perf_counter() - started
    return stats
