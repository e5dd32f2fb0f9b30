"""The pipeline's JSONL (one Q&A conversation about a page image per line) read and checked.

Usage:
    rows, problems = read_pipeline("training_data/vlm_train.jsonl")
    row = rows[0]; row.question, row.answer, row.images

A pipeline line looks like
    {"image": "images/21-03.jpg",
     "conversations": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "metadata": {"content_type": "...", "section": "...", "page": "..."}}
A row may show several pages or none:
    "images": ["images/21-03.jpg", "images/21-04.jpg"]        (every page, in order, before the first question)
    "content": [{"type": "image", "path": "images/a.jpg"}, {"type": "text", "text": "..."}]
                                                               (a user turn's own pages, OpenAI/Axolotl parts)
    no "image" key at all                                      (a text-only row)
A turn's pages come before its text, in the order the row lists them: the order the trainer sees
and the harness sends. Metadata under other names is mapped onto vlm3's (section, page,
content_type, page_text) by the recipe's `data.metadata`.
Every problem is collected with its file and line, so a user fixes them all in one pass.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = 4 * 1024 * 1024  # one Q&A row; a page's text plus long answers stay far below
MAX_JSON_DEPTH = 32  # nesting levels in a row (a row uses 4: row, conversations, turn, metadata)
LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # valid as a JSON escape, not as Unicode text
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
    """Bad input data; str() lists the problems grouped by cause (data_adapters.checks.group_problems): each
    cause with its count and first places, a lone problem with its file and line; causes past `limit` are counted."""

    def __init__(self, problems: list[Problem], limit: int = 30):
        from data_adapters.checks import group_problems  # checks imports this module

        self.problems = problems
        self.groups = group_problems(problems)
        shown = [f"  {g}" for g in self.groups[:limit]]
        if len(self.groups) > limit:
            rest = self.groups[limit:]
            shown.append(f"  ... and {len(rest)} more cause(s) ({sum(g.count for g in rest)} problem(s))")
        errors = sum(p.severity == "error" for p in problems)
        super().__init__(f"{errors} problem(s) in the data:\n" + "\n".join(shown))


# vlm3's own metadata names, and the recipe key that maps a pipeline's names onto them.
METADATA_NAMES = ("section", "page", "content_type", "page_text")
# Names other pipelines write for them: only used to suggest a `data.metadata` mapping, never applied unasked.
METADATA_ALIASES = {
    "section": ("section_title", "section_name", "chapter", "chapter_title", "group", "heading", "topic"),
    "page": ("page_no", "page_number", "page_num", "pageno", "page_id", "page_label"),
    "content_type": ("type", "kind", "category", "question_type", "qa_type"),
    "page_text": ("ocr_text", "text", "ocr", "page_content", "raw_text", "markdown"),
}


@dataclass(frozen=True)
class Turn:
    role: str
    content: str
    images: tuple[str, ...] = ()  # pages shown in this (user) turn, before its text, as written in the file


@dataclass(frozen=True)
class PipelineRow:
    turns: tuple[Turn, ...]
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    file: str = ""
    line: int = 0
    source_keys: tuple[str, ...] = field(default=(), compare=False)  # the pipeline's own metadata keys, before data.metadata

    @classmethod
    def of(cls, images: str | tuple[str, ...] | list[str], turns, **kwargs) -> "PipelineRow":
        """A row whose pages all go before the first question (the pipeline's `image`/`images` keys)."""
        images = (images,) if isinstance(images, str) else tuple(images)
        turns = list(turns)
        first = next((i for i, t in enumerate(turns) if t.role == "user"), None)
        if first is not None and images:
            turns[first] = Turn(turns[first].role, turns[first].content, images + turns[first].images)
        return cls(turns=tuple(turns), **kwargs)

    @property
    def images(self) -> tuple[str, ...]:
        """Every page of the row, in the order the model sees them; empty for a text-only row."""
        return tuple(image for turn in self.turns for image in turn.images)

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
        """Stable across reorderings of the file: the same pages and question give the same id."""
        return sample_id(self.images, self.question)

    @property
    def page(self) -> str:
        """The metadata's page, else the first page image's file stem; "" for a text-only row."""
        return page_name(self.metadata.get("page"), self.images)


def page_name(page: Any, images: tuple[str, ...] | list[str]) -> str:
    if page is not None and str(page).strip():
        return str(page)
    return "+".join(Path(image).stem for image in images)


def sample_id(images: str | tuple[str, ...] | list[str], question: str) -> str:
    """One page's id is as it always was; several pages join in order; a text-only row has none."""
    image = images if isinstance(images, str) else "\n".join(images)
    digest = hashlib.sha1(f"{image}\n{question.strip()}".encode("utf-8")).hexdigest()
    return digest[:12]


def flatten_content(content: Any) -> str | None:
    """Plain string content, or OpenAI-style text parts joined; None if neither."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return None


IMAGE_PART_TYPES = ("image", "image_url")
URL_PREFIXES = ("http://", "https://", "data:", "file:")


def image_part_path(part: dict) -> tuple[str | None, str | None]:
    """(path, problem) of one image part: {"type": "image", "path"|"image"|"url": ...} or
    {"type": "image_url", "image_url": {"url": ...}} (OpenAI's shape) with a path relative to the images root."""
    value = part.get("path", part.get("image", part.get("url")))
    if part.get("type") == "image_url":
        value = part.get("image_url")
        value = value.get("url") if isinstance(value, dict) else value
    if not isinstance(value, str) or not value.strip():
        return None, "has no path: give {\"type\": \"image\", \"path\": \"images/21-03.jpg\"}"
    if value.lower().startswith(URL_PREFIXES):
        return None, (f"is a URL ({value[:40]}...): vlm3 trains on files; save the page under the images root "
                      "and give its relative path")
    return value, None


def read_content(content: Any) -> tuple[str | None, tuple[str, ...], list[str]]:
    """(text, image paths, problems) of one turn's content: a string, or a list of text and image parts."""
    if isinstance(content, str):
        return content, (), []
    if not isinstance(content, list):
        return None, (), []
    texts: list[str] = []
    images: list[str] = []
    problems: list[str] = []
    for k, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind in IMAGE_PART_TYPES:
            path, problem = image_part_path(part)
            if problem:
                problems.append(f"content[{k}] (an image part) {problem}")
            else:
                images.append(path)
        else:
            problems.append(f"content[{k}] must be {{\"type\": \"text\", \"text\": ...}} or {{\"type\": \"image\", \"path\": ...}}")
    return "".join(texts), tuple(images), problems


def foreign_shape(obj: dict) -> str | None:
    """A sentence naming another dataset shape and the mapping to vlm3's, when the row is one."""
    turns = obj.get("conversations")
    if "conversations" not in obj and "messages" in obj:
        return ("has a 'messages' column (the OpenAI/Axolotl chat shape): vlm3 reads the pipeline's 'conversations'; "
                "rename 'messages' to 'conversations' (its role/content turns and image parts are read as they are)")
    if isinstance(turns, list) and any(isinstance(t, dict) and "from" in t and "value" in t for t in turns):
        return ("is in the ShareGPT shape ('from'/'value' turns): map each turn to {\"role\", \"content\"} "
                "(human -> user, gpt -> assistant, system -> system)")
    if "conversations" not in obj and any(k in obj for k in ("question", "instruction", "prompt")):
        return ("is a question/answer record, not a conversation: write {\"conversations\": [{\"role\": \"user\", ...}, "
                "{\"role\": \"assistant\", ...}]}")
    return None


def parse_row(obj: Any, file: str, line: int, metadata_names: dict[str, str] | None = None) -> tuple[PipelineRow | None, list[Problem]]:
    """Check one decoded line against the pipeline format; a row comes back only when it is usable."""
    problems: list[Problem] = []

    def bad(message: str, code: str = "invalid") -> None:
        problems.append(Problem(file, line, message, code=code))

    if not isinstance(obj, dict):
        bad("each line must be a JSON object with 'conversations' (and 'image' or 'images' for its pages)")
        return None, problems
    shape = foreign_shape(obj)
    if shape:
        bad(f"the row {shape}", "row_shape")
        return None, problems
    row_images = row_image_keys(obj, bad)
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
        role = turn["role"]
        content, images, part_problems = read_content(turn["content"])
        for problem in part_problems:
            bad(f"conversations[{i}].{problem}", "image_field")
        if role not in ROLES:
            bad(f"conversations[{i}].role is {role!r}; use one of user, assistant, system", "role")
        if content is None:
            bad(f"conversations[{i}].content must be a string, or a list of text and image parts", "content")
            continue
        if images and role != "user":
            bad(f"conversations[{i}] ({role}) has an image part: pages go in user turns only", "image_field")
        if not content.strip():
            what = "an empty answer" if role == "assistant" else "empty"
            bad(f"conversations[{i}] ({role}) is {what}: write the text or drop the row", "empty_turn")
        if IMAGE_PLACEHOLDER in content:
            bad(f"conversations[{i}] ({role}) holds an {IMAGE_PLACEHOLDER} placeholder (the LLaVA/ShareGPT shape): vlm3 "
                "places each page itself; remove the placeholder and list the pages in 'images', in order", "row_shape")
        tokens = [t for t in SPECIAL_TOKENS if t in content]
        if tokens:
            bad(f"conversations[{i}] ({role}) contains the model's control token(s) {', '.join(tokens)}: remove them", "special_token")
        turns.append(Turn(str(role), content, images))
    problems.extend(check_turn_order(turns, file, line))
    if row_images and any(t.images for t in turns):
        bad("the row gives pages twice: in 'image'/'images' and as image parts in its turns; use one of them", "image_field")
    if problems:
        return None, problems
    mapped = map_metadata(metadata, metadata_names or {})
    return PipelineRow.of(row_images, turns, metadata=mapped, file=file, line=line, source_keys=tuple(metadata)), []


IMAGE_PLACEHOLDER = "<image>"


def row_image_keys(obj: dict, bad, what: str = "row") -> tuple[str, ...]:
    """The row-level pages: 'image' (one path) or 'images' (a list); none for a text-only row (or probe: `what`)."""
    if "image" in obj and "images" in obj and obj["image"] is not None and obj["images"] is not None:
        bad(f"the {what} has both 'image' and 'images': give one page as 'image', or every page as 'images'", "image_field")
        return ()
    if obj.get("images") is not None:
        images = obj["images"]
        if not isinstance(images, list):
            bad("'images' must be a list of paths such as [\"images/21-03.jpg\", \"images/21-04.jpg\"]", "image_field")
            return ()
        if not images:
            bad(f"'images' is an empty list: list the {what}'s pages, or leave the key out for a text-only {what}", "image_field")
            return ()
        found = []
        for k, image in enumerate(images):
            if not isinstance(image, str) or not image.strip():
                bad(f"images[{k}] must be a non-empty path such as \"images/21-03.jpg\"", "image_field")
            elif image.lower().startswith(URL_PREFIXES):
                bad(f"images[{k}] is a URL: vlm3 trains on files; save the page under the images root and give its relative path", "image_field")
            else:
                found.append(image)
        return tuple(found)
    image = obj.get("image")
    if image is None:
        return ()  # a text-only row
    if not isinstance(image, str) or not image.strip():
        bad(f"'image' must be a non-empty path such as \"images/21-03.jpg\" (leave the key out for a text-only {what})", "image_field")
        return ()
    if image.lower().startswith(URL_PREFIXES):
        bad("'image' is a URL: vlm3 trains on files; save the page under the images root and give its relative path", "image_field")
        return ()
    return (image,)


def map_metadata(metadata: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """The row's metadata with vlm3's names filled from the pipeline's own (`data.metadata`); every key is kept."""
    if not names:
        return metadata
    mapped = dict(metadata)
    for ours, theirs in names.items():
        if theirs in metadata:
            mapped[ours] = metadata[theirs]
    return mapped


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


def read_pipeline(path: str | Path, metadata_names: dict[str, str] | None = None) -> tuple[list[PipelineRow], list[Problem]]:
    """All usable rows of a pipeline JSONL file, and every problem found in it; `metadata_names`
    maps vlm3's metadata names onto the pipeline's (the recipe's `data.metadata`)."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        return [], [Problem(name, None, "file not found; check data.train / data.val in the recipe", code="missing_file")]
    rows: list[PipelineRow] = []
    problems: list[Problem] = []
    for number, obj, problem in read_json_lines(path, "pipeline JSONL", "conversation"):
        if problem is not None:
            problems.append(problem)
            continue
        row, found = parse_row(obj, name, number, metadata_names)
        problems.extend(found)
        if row is not None:
            rows.append(row)
    if not rows and not problems:
        problems.append(Problem(name, None, "the file has no rows", code="empty_file"))
    return rows, problems


def read_json_lines(path: Path, kind: str, item: str) -> Iterator[tuple[int, Any, Problem | None]]:
    """(line number, decoded value, None) for each non-blank line of a JSONL file, or (number, None, problem)
    for a line that is too long (MAX_LINE_BYTES), not UTF-8, not JSON, nested too deep (MAX_JSON_DEPTH) or
    holding a lone surrogate: the bounds docs/data.md promises for pipeline and probe lines, in one reader.
    kind and item name the file and its lines in the messages ("pipeline JSONL", "conversation")."""
    name = str(path)
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(bounded_lines(handle), start=1):
            if raw is None:
                yield number, None, Problem(name, number, f"line longer than {MAX_LINE_BYTES:,} bytes: is this a {kind} file? "
                                            f"(one {item} per line)", code="line_too_long")
                continue
            try:
                text = raw.decode("utf-8-sig" if number == 1 else "utf-8")  # a BOM some editors write
            except UnicodeDecodeError as exc:
                yield number, None, Problem(name, number, f"not UTF-8 text (byte {exc.start + 1} of the line): save the file as UTF-8", code="encoding")
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield number, None, Problem(name, number, f"not valid JSON ({exc.msg} at column {exc.colno})", code="json")
                continue
            except RecursionError:
                obj = TOO_DEEP
            if obj is TOO_DEEP or json_depth(obj) > MAX_JSON_DEPTH:
                yield number, None, Problem(name, number, f"nested more than {MAX_JSON_DEPTH} levels deep: keep metadata flat", code="too_deep")
                continue
            surrogate = lone_surrogate(obj)
            if surrogate is not None:
                # Valid JSON ("\\ud800") but not Unicode: every later UTF-8 write of the row (prepare, eval) would fail.
                yield number, None, Problem(name, number, f"text holds a lone surrogate (\\u{ord(surrogate):04x}), which is not "
                                            "valid Unicode; fix the exporter", code="surrogate")
                continue
            yield number, obj, None


def lone_surrogate(value: Any) -> str | None:
    """The first lone UTF-16 surrogate in any string (key or value) of decoded JSON; None when there is none.
    json.loads joins a valid pair into one character, so any surrogate left is a lone one."""
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            found = LONE_SURROGATE.search(current)
            if found:
                return found.group()
        elif isinstance(current, dict):
            stack.extend(current.keys())
            stack.extend(current.values())
        elif isinstance(current, list):
            stack.extend(current)
    return None


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


def to_axolotl_row(row: PipelineRow, image_dir: str, system_prompt: str | None = None,
                   copies: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One pipeline row in Axolotl's multimodal chat format.

    Each user turn's pages go first, in the row's order, then its text, as OpenAI-style clients
    send them at inference; a text-only row has text parts only. `image_dir` is where the images
    live when the trainer runs (a local folder, or a Modal volume path), joined to the row's
    relative image path; `copies` gives the path of a normalised copy for a page whose file the
    trainer would read differently (EXIF-rotated, 16-bit, CMYK: data_adapters.images).
    Only `messages` and `id` are kept: nested metadata that varies between rows
    breaks `datasets` JSON loading.
    """
    copies = copies or {}
    messages: list[dict[str, Any]] = []
    if system_prompt and row.turns[0].role != "system":
        messages.append({"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    for turn in row.turns:
        content: list[dict[str, str]] = [
            {"type": "image", "path": copies.get(image) or f"{image_dir.rstrip('/')}/{image}"} for image in turn.images
        ]
        content.append({"type": "text", "text": turn.content})
        messages.append({"role": turn.role, "content": content})
    return {"id": row.id, "messages": messages}
