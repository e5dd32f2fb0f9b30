"""The pipeline's JSONL (one Q&A conversation about a page image per line) read and checked.

Usage:
    rows, problems = read_pipeline("training_data/vlm_train.jsonl")
    row = rows[0]; row.question, row.answer, row.image

A pipeline line looks like
    {"image": "images/21-03.jpg",
     "conversations": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "metadata": {"content_type": "...", "section": "...", "page": "..."}}
Every problem is collected with its file and line, so a user fixes them all in one pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 4 * 1024 * 1024  # one Q&A row; a page's text plus long answers stay far below
MAX_JSON_DEPTH = 32  # nesting levels in a row (a row uses 4: row, conversations, turn, metadata)
TOO_DEEP = object()  # json.loads gave up (RecursionError) on a line nested thousands of levels deep
# Qwen2-VL's control tokens: in a row's text they break the chat template or the image placeholders.
SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>",
                  "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None  # 1-based; None for problems of the whole file
    message: str
    severity: str = "error"  # "error" stops a run; "warning" is reported
    code: str = "invalid"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"


class DataError(Exception):
    """Bad input data; str() lists every problem with file and line."""

    def __init__(self, problems: list[Problem], limit: int = 30):
        self.problems = problems
        shown = [f"  {p}" for p in problems[:limit]]
        if len(problems) > limit:
            shown.append(f"  ... and {len(problems) - limit} more")
        errors = sum(p.severity == "error" for p in problems)
        super().__init__(f"{errors} problem(s) in the data:\n" + "\n".join(shown))


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


@dataclass(frozen=True)
class PipelineRow:
    image: str  # as written in the file, relative to the images root
    turns: tuple[Turn, ...]
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    file: str = ""
    line: int = 0

    @property
    def question(self) -> str:
        """The first user turn: what the harness asks the served model."""
        return next(t.content for t in self.turns if t.role == "user")

    @property
    def answer(self) -> str:
        """The first assistant turn: the reference answer to `question`."""
        return next(t.content for t in self.turns if t.role == "assistant")

    @property
    def id(self) -> str:
        """Stable across reorderings of the file: the same image and question give the same id."""
        return sample_id(self.image, self.question)

    @property
    def page(self) -> str:
        return str(self.metadata.get("page") or Path(self.image).stem)


def sample_id(image: str, question: str) -> str:
    digest = hashlib.sha1(f"{image}\n{question.strip()}".encode("utf-8")).hexdigest()
    return digest[:12]


def flatten_content(content: Any) -> str | None:
    """Plain string content, or OpenAI-style text parts joined; None if neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return None


def parse_row(obj: Any, file: str, line: int) -> tuple[PipelineRow | None, list[Problem]]:
    """Check one decoded line against the pipeline format; a row comes back only when it is usable."""
    problems: list[Problem] = []

    def bad(message: str, code: str = "invalid") -> None:
        problems.append(Problem(file, line, message, code=code))

    if not isinstance(obj, dict):
        bad("each line must be a JSON object with 'image' and 'conversations'")
        return None, problems
    image = obj.get("image")
    if not isinstance(image, str) or not image.strip():
        bad("'image' must be a non-empty path such as \"images/21-03.jpg\"", "image_field")
    conversations = obj.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        bad("'conversations' must be a non-empty list of {\"role\", \"content\"} turns", "conversations")
        return None, problems
    metadata = obj.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        bad("'metadata' must be an object")
        metadata = {}

    turns: list[Turn] = []
    for i, turn in enumerate(conversations):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            bad(f"conversations[{i}] must have 'role' and 'content'", "conversations")
            continue
        role, content = turn["role"], flatten_content(turn["content"])
        if role not in ROLES:
            bad(f"conversations[{i}].role is {role!r}; use one of user, assistant, system", "role")
        if content is None:
            bad(f"conversations[{i}].content must be a string", "content")
            continue
        if not content.strip():
            what = "an empty answer" if role == "assistant" else "empty"
            bad(f"conversations[{i}] ({role}) is {what}: write the text or drop the row", "empty_turn")
        tokens = [t for t in SPECIAL_TOKENS if t in content]
        if tokens:
            bad(f"conversations[{i}] ({role}) contains the model's control token(s) {', '.join(tokens)}: remove them", "special_token")
        turns.append(Turn(str(role), content))
    problems.extend(check_turn_order(turns, file, line))
    if problems:
        return None, problems
    return PipelineRow(image=image, turns=tuple(turns), metadata=metadata, file=file, line=line), []


def check_turn_order(turns: list[Turn], file: str, line: int) -> list[Problem]:
    """An optional system turn, then user and assistant alternating, ending with the assistant."""
    roles = [t.role for t in turns]
    if roles and roles[0] == "system":
        roles = roles[1:]
    if "system" in roles:
        return [Problem(file, line, "a system turn may only come first", code="turn_order")]
    expected = ["user", "assistant"] * (len(roles) // 2 + 1)
    if roles != expected[: len(roles)]:
        return [Problem(file, line, f"turns must alternate user, assistant, ...; got {', '.join(roles)}", code="turn_order")]
    if not roles or roles[-1] != "assistant":
        return [Problem(file, line, "the conversation must end with an assistant answer", code="turn_order")]
    return []


def read_pipeline(path: str | Path) -> tuple[list[PipelineRow], list[Problem]]:
    """All usable rows of a pipeline JSONL file, and every problem found in it."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        return [], [Problem(name, None, "file not found; check data.train / data.val in the recipe", code="missing_file")]
    rows: list[PipelineRow] = []
    problems: list[Problem] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(bounded_lines(handle), start=1):
            if raw is None:
                problems.append(Problem(name, number, f"line longer than {MAX_LINE_BYTES:,} bytes: is this a pipeline JSONL file? "
                                        "(one conversation per line)", code="line_too_long"))
                continue
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM some editors write
            except UnicodeDecodeError as exc:
                problems.append(Problem(name, number, f"not UTF-8 text (byte {exc.start + 1} of the line): save the file as UTF-8", code="encoding"))
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                problems.append(Problem(name, number, f"not valid JSON ({exc.msg} at column {exc.colno})", code="json"))
                continue
            except RecursionError:
                obj = TOO_DEEP
            if obj is TOO_DEEP or json_depth(obj) > MAX_JSON_DEPTH:
                problems.append(Problem(name, number, f"nested more than {MAX_JSON_DEPTH} levels deep: keep metadata flat", code="too_deep"))
                continue
            row, found = parse_row(obj, name, number)
            problems.extend(found)
            if row is not None:
                rows.append(row)
    if not rows and not problems:
        problems.append(Problem(name, None, "the file has no rows", code="empty_file"))
    return rows, problems


def bounded_lines(handle, limit: int = MAX_LINE_BYTES):
    """The lines of a binary file, each at most `limit` bytes; None stands for a longer line, which
    is skipped without being held in memory (a file with no newline at all is one such line)."""
    while True:
        raw = handle.readline(limit + 1)
        if not raw:
            return
        if len(raw) > limit and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = handle.readline(limit + 1)
            yield None
            continue
        yield raw


def json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of decoded JSON, counted without recursion and stopping past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if isinstance(current, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            stack.extend((child, depth + 1) for child in (current.values() if isinstance(current, dict) else current))
    return deepest


def resolve_image(images_root: Path, image: str) -> Path | None:
    """The image's path under images_root, or None when it would escape it ("../", absolute paths,
    or a symlink inside the root that points outside it).

    The test is on the real paths (symlinks followed on both sides), so an images folder that is
    itself a symlink still works, and a symlink to another image inside the root is accepted."""
    if not image or Path(image).is_absolute():
        return None
    root = Path(os.path.abspath(images_root))
    candidate = Path(os.path.normpath(root / image))
    if candidate == root or root not in candidate.parents:
        return None
    real_root, real = Path(os.path.realpath(root)), Path(os.path.realpath(candidate))
    if real == real_root or real_root not in real.parents:
        return None
    return candidate


def is_regular_file(path: Path) -> bool:
    """A regular file after following symlinks: never a device (/dev/zero), a FIFO or a folder."""
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def to_axolotl_row(row: PipelineRow, image_dir: str, system_prompt: str | None = None) -> dict[str, Any]:
    """One pipeline row in Axolotl's multimodal chat format.

    The image goes first in the first user turn, as OpenAI-style clients send it at
    inference; `image_dir` is where the images live when the trainer runs (a local
    folder, or a Modal volume path), joined to the row's relative image path.
    Only `messages` and `id` are kept: nested metadata that varies between rows
    breaks `datasets` JSON loading.
    """
    messages: list[dict[str, Any]] = []
    if system_prompt and row.turns[0].role != "system":
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    image_placed = False
    for turn in row.turns:
        content: list[dict[str, str]] = []
        if turn.role == "user" and not image_placed:
            content.append({"type": "image", "path": f"{image_dir.rstrip('/')}/{row.image}"})
            image_placed = True
        content.append({"type": "text", "text": turn.content})
        messages.append({"role": turn.role, "content": content})
    return {"id": row.id, "messages": messages}
