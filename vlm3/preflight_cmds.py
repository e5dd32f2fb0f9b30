"""Preflight verbs: check the dataset and price the run before any GPU starts (registered by vlm3.cli).

Usage:
    vlm3 check recipes/e30m3_lora.yaml [--strict] [--decode-images]   # exit 1 on errors
    vlm3 plan recipes/e30m3_lora.yaml                                 # tokens, hours, dollars, memory
    vlm3 resize recipes/e30m3_lora.yaml                               # pre-resized copies in runs/<recipe>/resized/, originals untouched
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
from collections import Counter
from pathlib import Path

from data_adapters.checks import DatasetScan, scan_dataset
from data_adapters.images import describe, open_page
from data_adapters.pipeline import read_pipeline, resolve_image
from data_adapters.tokens import CHARS_PER_TOKEN, load_tokenizer, resized_size, visual_tokens
from vlm3.recipe import Recipe, load_recipe

RESOLUTION_CAPS_MP = (0.4, 1.0, 2.0)


def console():
    from vlm3.console import console as shared

    return shared


def scan_recipe(recipe: Recipe, decode_images: bool = False) -> tuple[DatasetScan, dict]:
    """Every problem in the recipe's data, and the JSON report of the check."""
    train, train_problems = read_pipeline(recipe.data.train, recipe.data.metadata)
    val, val_problems = read_pipeline(recipe.data.val, recipe.data.metadata)
    tokenizer = load_tokenizer(recipe.model.base)
    scan = scan_dataset(train, val, Path(recipe.data.images_root), recipe, decode_images=decode_images, tokenizer=tokenizer)
    from harness.samples import check_probes

    scan.problems[:0] = train_problems + val_problems
    scan.problems += check_probes(recipe)
    tokens = sorted(r.tokens for r in scan.rows) or [0]
    words = [r.answer_words for r in scan.rows] or [0]
    report = {
        "recipe": recipe.name,
        "files": {"train": recipe.data.train, "val": recipe.data.val, "images_root": recipe.data.images_root},
        "counts": {
            "train_rows": len(train), "val_rows": len(val), "images": scan.images,
            "kept_train_rows": sum(r.split == "train" for r in scan.rows), "kept_val_rows": sum(r.split == "val" for r in scan.rows),
            "dropped_long_rows": sum(scan.dropped.values()),
            "text_only_rows": sum(not r.images for r in scan.rows),
            "multi_page_rows": sum(len(r.images) > 1 for r in scan.rows),
            "max_images_per_row": scan.max_images_per_row,
            "errors": sum(p.severity == "error" for p in scan.problems),
            "warnings": sum(p.severity != "error" for p in scan.problems),
        },
        "by_code": dict(sorted({p.code: sum(q.code == p.code for q in scan.problems) for p in scan.problems}.items())),
        "sequence_len": recipe.train.sequence_len,
        "images": {"min_pixels": recipe.images.min_pixels, "max_pixels": recipe.images.max_pixels},
        "tokens": {
            "text_tokens_from": "the model's tokenizer" if tokenizer else f"an estimate (characters / {CHARS_PER_TOKEN})",
            "p50": tokens[len(tokens) // 2], "p95": tokens[int(len(tokens) * 0.95) - (len(tokens) >= 20)], "max": tokens[-1],
            "visual_mean": statistics.fmean(r.visual_tokens for r in scan.rows) if scan.rows else 0.0,
            "over_limit": sum(1 for t in tokens if t > recipe.train.sequence_len),
        },
        "answers": {"mean_words": statistics.fmean(words), "max_words": max(words)},
        "pages": page_formats(scan),
        "problems": [{"file": p.file, "line": p.line, "severity": p.severity, "code": p.code, "message": p.message} for p in scan.problems],
    }
    return scan, report


def page_formats(scan: DatasetScan) -> dict:
    """Formats and modes of the pages, once per image, and every page the normalisation changes."""
    formats = scan.formats.values()
    return {
        "formats": dict(sorted(Counter(f.format for f in formats).items())),
        "modes": dict(sorted(Counter(f.mode for f in formats).items())),
        "rotated": sum(f.rotated for f in formats),
        "normalised": [{"image": image, "format": f.format, "mode": f.mode, "notes": f.notes}
                       for image, f in sorted(scan.formats.items()) if f.needs_copy],
    }


def cmd_check(args: argparse.Namespace) -> int:
    from harness.dataset_card import render_dataset_card
    from data_adapters.jsonio import write_json

    recipe = load_recipe(args.recipe)
    scan, report = scan_recipe(recipe, decode_images=args.decode_images)
    out = Path(args.out or Path("runs") / recipe.name / "preflight")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "check.json", report)
    card = render_dataset_card(report, scan, out / "dataset_card.html")
    counts, tokens = report["counts"], report["tokens"]
    console().print(
        f"{recipe.name}: {counts['train_rows']} train / {counts['val_rows']} val rows, {counts['images']} images; "
        f"tokens per row p50 {tokens['p50']:,}, p95 {tokens['p95']:,}, max {tokens['max']:,} (limit {recipe.train.sequence_len:,})",
        markup=False,
    )
    shapes = [f"{counts['multi_page_rows']} with several pages (up to {counts['max_images_per_row']})" if counts["multi_page_rows"] else "",
              f"{counts['text_only_rows']} text-only" if counts["text_only_rows"] else "",
              f"{counts['dropped_long_rows']} dropped as too long (data.long_rows: drop)" if counts["dropped_long_rows"] else ""]
    if any(shapes):
        console().print("  rows: " + "; ".join(s for s in shapes if s), markup=False)
    pages = report["pages"]
    if pages["normalised"]:
        console().print(f"  pages: {len(pages['normalised'])} normalised for training and serving ({pages['rotated']} EXIF-rotated; "
                        f"formats {pages['formats']}, modes {pages['modes']}); each is listed on the card", markup=False)
    for problem in scan.problems[: args.show]:
        console().print(f"  {problem.severity}: {problem}", markup=False)
    if len(scan.problems) > args.show:
        console().print(f"  ... {len(scan.problems) - args.show} more in {out / 'check.json'}")
    console().print(f"{counts['errors']} error(s), {counts['warnings']} warning(s); report {out / 'check.json'}, card {card}")
    failed = counts["errors"] > 0 or (args.strict and counts["warnings"] > 0)
    console().print(f"next: {'fix the data, then ' if failed else ''}vlm3 plan {args.recipe}")
    return 1 if failed else 0


def dataset_tokens(scan: DatasetScan, recipe: Recipe, max_pixels: int | None = None):
    from vlm3.plan import DatasetTokens, Rows

    cap = max_pixels or recipe.images.max_pixels

    def split_rows(split: str) -> tuple[list, Rows]:
        rows = [r for r in scan.rows if r.split == split]
        pages = [tuple(visual_tokens(w, h, recipe.images.min_pixels, cap, recipe.family.factor) for w, h in r.sizes) for r in rows]
        visual = [sum(p) for p in pages]
        return rows, Rows(tuple(r.text_tokens + v for r, v in zip(rows, visual)), tuple(visual), tuple(pages))

    rows, train = split_rows("train")
    _, val = split_rows("val")
    return DatasetTokens(samples=len(rows), text_tokens=sum(r.text_tokens for r in rows), visual_tokens=sum(train.visual),
                         max_row_tokens=max(train.lengths, default=0), train=train, val=val)


def cmd_plan(args: argparse.Namespace) -> int:
    from vlm3.plan import format_plan, plan_run

    recipe = load_recipe(args.recipe)
    scan, report = scan_recipe(recipe)
    blocking = [p for p in scan.problems if p.code == "dropped_most"]
    if not any(r.split == "train" for r in scan.rows) or blocking:
        for problem in blocking:
            console().print(f"  error: {problem}", markup=False)
        console().print(f"no run to price: {report['counts']['kept_train_rows']} training rows would train; run `vlm3 check {args.recipe}`",
                        markup=False)
        return 1
    plan = plan_run(recipe, dataset_tokens(scan, recipe))
    console().print(format_plan(plan), markup=False)
    console().print("\nresolution trade-off (same recipe, other images.max_pixels):")
    for megapixels in RESOLUTION_CAPS_MP:
        cap = int(megapixels * 1_000_000) // recipe.family.pixels_per_token * recipe.family.pixels_per_token
        other = plan_run(recipe.model_copy(update={"images": recipe.images.model_copy(update={"max_pixels": cap})}),
                         dataset_tokens(scan, recipe, max_pixels=cap), gpus=[recipe.compute.gpu_type])
        est = other.gpus[0] if other.gpus else None
        money = f"${est.usd[0]:,.2f}-{est.usd[1]:,.2f}" if est and est.usd else "-"
        hours = f"{est.hours[0]:.2f}-{est.hours[1]:.2f} h" if est else "-"
        console().print(f"  {megapixels:>3} MP (max_pixels {cap:,}): {other.visual_tokens_per_epoch:,} visual tokens/epoch, "
                        f"{hours}, {money}, ~{other.memory_gb:.0f} GB")
    judge_line = judge_estimate_line(recipe, report)
    if judge_line:
        console().print(judge_line)
    if report["counts"]["errors"]:
        console().print(f"warning: the data has {report['counts']['errors']} error(s); run `vlm3 check {args.recipe}`")
    console().print(f"next: vlm3 train {args.recipe}   (or on Modal: modal run modal_entry.py --recipe {args.recipe})")
    return 0


def judge_estimate_line(recipe: Recipe, report: dict) -> str | None:
    """The judge's cost for this recipe's evaluation, when the judge module can price it."""
    if recipe.eval.judge is None:
        return None
    try:
        from harness.judge import estimate_judge_cost
    except ImportError:  # the judge's extra (DeepEval) is not installed
        return None
    samples = report["counts"]["val_rows"] if not recipe.eval.max_samples else min(report["counts"]["val_rows"], recipe.eval.max_samples)
    probes = Path(recipe.data.probes) if recipe.data.probes else None
    if probes and probes.is_file():
        samples += sum(1 for line in probes.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip())
    return str(estimate_judge_cost(recipe.eval.judge, samples))


NORMALISATION = "n1"  # in the cache key: copies written before pages were normalised (16-bit clipped, sideways) are not reused


def content_key(path: Path, max_pixels: int, min_pixels: int, factor: int) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
    return f"{digest}-{min_pixels}-{max_pixels}-{factor}-{NORMALISATION}"


def unreadable_images(rows, root: Path) -> list:
    """Each row whose image is empty, truncated or not an image, by file and line (as `vlm3 check` reports it)."""
    from data_adapters.checks import inspect_image
    from data_adapters.pipeline import Problem

    seen: dict[str, object] = {}
    problems = []
    for row in rows:
        for image in row.images:
            if image not in seen:
                seen[image] = inspect_image(root, image, decode=True)
            info = seen[image]
            if info.code in ("image_undecodable", "image_missing", "image_outside_root"):
                problems.append(Problem(row.file, row.line, f"{info.problem}: fix or replace it, then run `vlm3 resize` again", code=info.code))
    return problems


def cmd_resize(args: argparse.Namespace) -> int:
    """Pre-resized copies at the recipe's pixel cap: smaller uploads and less GPU-side preprocessing."""
    from PIL import Image

    recipe = load_recipe(args.recipe)
    root = Path(recipe.data.images_root)
    out = Path(args.out) if args.out else Path("runs") / recipe.name / "resized" / f"max{recipe.images.max_pixels}"
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents or out.resolve() in root.resolve().parents:
        from vlm3.console import UserError

        raise UserError(f"--out {out} overlaps the images root {root}: resized copies go to a separate folder, originals are never touched")
    images: set[str] = set()
    problems = []
    for path in (recipe.data.train, recipe.data.val):
        rows, _ = read_pipeline(path, recipe.data.metadata)
        images |= {image for r in rows for image in r.images}
        problems += unreadable_images(rows, root)
    if problems:
        # Every image is decoded before anything is written: a bad page leaves no half-made folder.
        from data_adapters.pipeline import DataError

        raise DataError(problems)
    cache = out / ".cache"
    cache.mkdir(parents=True, exist_ok=True)
    written = reused = normalised = 0
    for image in sorted(images):
        source = resolve_image(root, image)
        if source is None or not source.is_file():
            continue
        key = content_key(source, recipe.images.max_pixels, recipe.images.min_pixels, recipe.family.factor)
        # The copy is upright 8-bit RGB (data_adapters.images), so every reader sees the pixels the
        # trainer trains on; a page whose mode JPEG cannot hold exactly is kept lossless as PNG.
        needs_copy = describe(source).needs_copy
        suffix = ".png" if needs_copy else source.suffix.lower()
        cached = cache / f"{key}{suffix}"
        if cached.exists():
            reused += 1
        else:
            staging = cache / f".{key}.partial{suffix}"
            try:
                page = open_page(source)
                height, width = resized_size(page.height, page.width, recipe.images.min_pixels, recipe.images.max_pixels,
                                             recipe.family.factor)
                page.resize((width, height), Image.Resampling.BICUBIC).save(staging, quality=90)
            except BaseException:
                staging.unlink(missing_ok=True)
                raise
            os.replace(staging, cached)
            written += 1
        target = out / image
        normalised += needs_copy
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() or target.is_symlink():
            target.unlink()
        os.link(cached, target)
    console().print(f"{written} resized, {reused} reused from the cache -> {out} (originals untouched)")
    if normalised:
        console().print(f"{normalised} page(s) (rotated, 16-bit, CMYK, transparent or not JPEG/PNG) hold upright 8-bit RGB PNG "
                        "pixels under their own names; readers decode them by content")
    console().print(f"next: set data.images_root: {out} in a copy of the recipe (image paths keep their names)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("check", help="check a recipe's dataset (images, roles, duplicates, leakage, lengths)")
    p.add_argument("recipe")
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument("--decode-images", action="store_true", help="decode every image fully (slower; finds truncated files)")
    p.add_argument("--out", help="folder for check.json and dataset_card.html (default runs/<recipe>/preflight)")
    p.add_argument("--show", type=int, default=20, help="problems to print")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("plan", help="tokens, FLOPs, hours, dollars and memory of a recipe")
    p.add_argument("recipe")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("resize", help="write pre-resized images at the recipe's pixel cap (content-hash cached)")
    p.add_argument("recipe")
    p.add_argument("--out", help="folder for the copies (default runs/<recipe>/resized/max<max_pixels>)")
    p.set_defaults(func=cmd_resize)

