"""The recipe reference (docs/recipe-reference.md), generated from the schema: every key with its type, default,
bounds and the comment written beside it in vlm3/recipe/schema.py.

Usage:
    python -m vlm3.recipe.reference docs/recipe-reference.md     # `make docs`; tests/test_recipe_reference.py checks it is current
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import sys
import tokenize
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from vlm3.core.jsonio import write_text_atomic
from vlm3.recipe import schema
from vlm3.recipe.schema import Recipe

BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "at least", "max_length": "at most"}


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Each field's comment in the schema's source: the comment lines just above it and the one beside it."""
    source = inspect.getsource(model)
    lines = source.splitlines()
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    found = {}
    body = ast.parse(source).body[0].body
    previous_end = body[0].lineno - 1 if body else 0
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            above = []
            line = node.lineno - 1
            while line > previous_end and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            beside = [comments[n] for n in range(node.lineno, node.end_lineno + 1) if n in comments]
            text = " ".join(c for c in above + beside if c and not c.startswith("noqa"))
            if text:
                found[node.target.id] = text
        previous_end = node.end_lineno
    return found


def type_text(annotation: Any) -> str:
    """A field's type as a recipe writer reads it: `int | null`, `one of: lora, qlora, full`, `list of string`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_text(a) for a in args)
    if origin is list:
        return f"list of {type_text(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping of {type_text(args[0])} to {type_text(args[1])}" if args else "mapping"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    names = {str: "string", int: "integer", float: "number", bool: "true/false", Any: "any"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default
    if isinstance(value, BaseModel):
        return "(section)"
    return json.dumps(value, ensure_ascii=False)


def bounds_text(info: FieldInfo) -> str:
    found = []
    for item in info.metadata:
        for name, word in BOUNDS.items():
            value = getattr(item, name, None)
            if value is not None:
                found.append(f"{word} {value}")
        pattern = getattr(item, "pattern", None)
        if pattern:
            found.append(f"matches `{pattern}`")
    return ", ".join(found)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def sections(model: type[BaseModel] = Recipe, prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """The recipe's sections in schema order: (dotted name, model), the top level first."""
    found = [(prefix, model)]
    for name, info in model.model_fields.items():
        nested = schema.nested_model(info.annotation)
        if nested is not None:
            found += sections(nested, f"{prefix}{name}.")
    return found


def reference() -> str:
    out = ["# Recipe reference", "",
           "Every key a recipe takes: its type, default, bounds and what it does. Generated from",
           "`vlm3/recipe/schema.py` by `make docs`; edit the schema, not this page. Back to the [README](../README.md);",
           "how to write a recipe: [recipes](recipes.md).", ""]
    for dotted, model in sections():
        title = dotted.rstrip(".") or "top level"
        out += [f"## {title if dotted else 'Top level'}", ""]
        doc = inspect.getdoc(model)
        if doc and model.__doc__ and model is not Recipe:
            out += [" ".join(doc.split()), ""]
        comments = field_comments(model)
        out += ["| key | type | default | bounds | notes |", "|---|---|---|---|---|"]
        for name, info in model.model_fields.items():
            key = f"`{dotted}{name}`"
            out.append("| " + " | ".join(cell(text) for text in (
                key, type_text(info.annotation), default_text(info), bounds_text(info), comments.get(name, ""))) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m vlm3.recipe.reference OUT.md", file=sys.stderr)
        return 2
    write_text_atomic(Path(argv[0]), reference())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
