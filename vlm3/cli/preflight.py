"""Preflight verbs: check the dataset and price the run before any GPU starts (registered by vlm3.cli.main).

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

from data_adapters.checks import DatasetScan, group_problems
from data_adapters.images import describe, open_page
from data_adapters.pipeline import read_pipeline, resolve_image
from data_adapters.tokens import CHARS_PER_TOKEN, resized_size
from vlm3.plan.dataset import dataset_tokens, scan_data
from vlm3.recipe.schema import Recipe, load_recipe

RESOLUTION_CAPS_MP = (0.4, 1.0, 2.0)


def console():
    from vlm3.core.console import console as shared

    return shared


def scan_recipe(recipe: Recipe, decode_images: bool = False) -> tuple[DatasetScan, dict]:
    """Every problem in the recipe's data, and the JSON report of the check."""
    from data_adapters.samples import check_probes

    scan, train, val, tokenizer = scan_data(recipe, decode_images=decode_images)
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
        "problem_groups": [g.to_dict() for g in group_problems(scan.problems)],  # by cause, with counts and first places
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
    from vlm3.core.jsonio import write_json

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
    print_problem_groups(scan.problems, args.show, out / "check.json")
    console().print(f"{counts['errors']} error(s), {counts['warnings']} warning(s); report {out / 'check.json'}, card {card}")
    failed = counts["errors"] > 0 or (args.strict and counts["warnings"] > 0)
    console().print(f"next: {'fix the data, then ' if failed else ''}vlm3 plan {args.recipe}")
    return 1 if failed else 0


def problem_lines(problems: list, show: int, report_file: Path) -> list[str]:
    """The problems grouped by cause, each with its count and first places (data_adapters.checks.group_problems);
    the causes past `show` are counted, never dropped unsaid."""
    groups = group_problems(problems)
    lines = [f"  {g.severity}: {g}" for g in groups[:show]]
    if len(groups) > show:
        rest = groups[show:]
        lines.append(f"  ... {len(rest)} more cause(s) ({sum(g.count for g in rest)} problem(s)) in {report_file}")
    return lines


def print_problem_groups(problems: list, show: int, report_file: Path) -> None:
    for line in problem_lines(problems, show, report_file):
        console().print(line, markup=False)


def cmd_plan(args: argparse.Namespace) -> int:
    from vlm3.plan.estimate import GIB, format_plan, plan_run, size_text

    recipe = load_recipe(args.recipe)
    cards = args.gpu or []
    named = recipe.compute.gpu
    if cards:  # priced as if the recipe said compute.gpu: CARD (checked as the recipe would be)
        recipe = priced_on(recipe, cards[0], args.recipe)
    scan, report = scan_recipe(recipe)
    blocking = [p for p in scan.problems if p.code == "dropped_most"]
    if not any(r.split == "train" for r in scan.rows) or blocking:
        for problem in blocking:
            console().print(f"  error: {problem}", markup=False)
        console().print(f"no run to price: {report['counts']['kept_train_rows']} training rows would train; run `vlm3 check {args.recipe}`",
                        markup=False)
        return 1
    plan = plan_run(recipe, dataset_tokens(scan, recipe), gpus=[c for c in cards if c != "cpu"] or None)
    if cards and cards[0] != named:
        console().print(f"priced as compute.gpu: {cards[0]} (the recipe says {named}; set it there to train on it)", markup=False)
    console().print(format_plan(plan), markup=False)
    console().print("\nresolution trade-off (same recipe, other images.max_pixels):")
    for megapixels in RESOLUTION_CAPS_MP:
        cap = int(megapixels * 1_000_000) // recipe.family.pixels_per_token * recipe.family.pixels_per_token
        other = plan_run(recipe.model_copy(update={"images": recipe.images.model_copy(update={"max_pixels": cap})}),
                         dataset_tokens(scan, recipe, max_pixels=cap), gpus=None if recipe.on_cpu else [recipe.compute.gpu])
        est = other.gpus[0] if other.gpus else None
        money = f"${est.usd[0]:,.2f}-{est.usd[1]:,.2f}" if est and est.usd else "-"
        hours = f"{est.hours[0]:.2f}-{est.hours[1]:.2f} h" if est else "-"
        if other.cpu:
            hours, money = f"{other.cpu.hours[0]:.2g}-{other.cpu.hours[1]:.2g} h of CPU (estimate)", "no dollars"
        console().print(f"  {megapixels:>3} MP (max_pixels {cap:,}): {other.visual_tokens_per_epoch:,} visual tokens/epoch, "
                        f"{hours}, {money}, ~{size_text(other.memory_gb * GIB)}", markup=False)
    judge_line = judge_estimate_line(recipe)
    if judge_line:
        console().print(judge_line, markup=False)
    if report["counts"]["errors"]:
        console().print(f"warning: the data has {report['counts']['errors']} error(s); run `vlm3 check {args.recipe}`")
    if recipe.on_cpu:
        console().print(f"next: vlm3 train {args.recipe}   (on this machine's CPU)", markup=False)
    else:
        console().print(f"next: vlm3 modal train {args.recipe}   (checks, uploads and trains on Modal; on a local GPU: vlm3 train "
                        f"{args.recipe})", markup=False)
    return 0


def priced_on(recipe: Recipe, card: str, path: str) -> Recipe:
    """The recipe with compute.gpu: CARD, for `plan --gpu`; a card outside the GPU table or a recipe it breaks is refused."""
    from vlm3.core.console import UserError
    from vlm3.plan.estimate import GPUS, on_card
    from vlm3.recipe.schema import RecipeError

    name = card.partition(":")[0]
    if name != "cpu" and name not in GPUS:
        raise UserError(f"--gpu {card}: no such card in vlm3's GPU table; one of {', '.join(GPUS)}, optionally with :N cards "
                        "(e.g. A100-80GB:4), or cpu")
    try:
        return on_card(recipe, card)
    except ValueError as exc:  # check_gpu_name: a count outside 1-8
        raise UserError(f"--gpu {card}: {exc}") from None
    except RecipeError as exc:
        raise UserError(f"--gpu {card}: {path} cannot run there:\n" + "\n".join(f"  {p}" for p in exc.problems)) from None


def judge_estimate_line(recipe: Recipe, report: dict | None = None) -> str | None:
    """The judge's cost for this recipe's evaluation, when the judge module can price it: the samples `vlm3 eval`
    judges (every assistant turn of the validation rows, the probes, vlm3's general probes), counted as it counts them."""
    if recipe.eval.judge is None:
        return None
    try:
        from harness.judge import estimate_judge_cost
    except ImportError:  # the judge's extra (DeepEval) is not installed
        return None
    import tempfile

    from data_adapters.pipeline import DataError
    from harness.general_probes import load_general_probes
    from data_adapters.samples import load_eval_samples

    with tempfile.TemporaryDirectory(prefix="vlm3-plan-") as pages:
        try:
            samples = load_eval_samples(recipe, general=load_general_probes(Path(pages)))
        except DataError as exc:
            return f"judge estimate: none (`vlm3 eval` would refuse the samples: {len(exc.problems)} problem(s); run `vlm3 check`)"
        # Each sample's question, reference and page text, and its pages' image tokens (the judge is shown them).
        estimate = estimate_judge_cost(recipe.eval.judge, [sample.to_dict() for sample in samples])
    kinds = Counter(sample.kind for sample in samples)
    counted = ", ".join(f"{kinds[k]} {label}" for k, label in (("val", "validation turns"), ("probe", "probes"),
                                                                ("general", "general probes")) if kinds[k])
    return f"{estimate} [{counted}, as `vlm3 eval` counts them]"


# Run in the trainer environment by `vlm3 validate`: Axolotl's schema over each rendered config, one process for
# all of them (importing Axolotl takes seconds). Prints one JSON list on its last line.
AXOLOTL_SCHEMA_SCRIPT = """
import json, os, sys
from pathlib import Path
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1"); os.environ.setdefault("HF_HUB_OFFLINE", "1")
from vlm3.train.trainer_side import validate_config
jobs = json.load(sys.stdin)
print(json.dumps([validate_config(Path(job["config"]), job["gpu"], job["count"]) for job in jobs]))
"""


def axolotl_schema_problems(recipes: list[tuple[str, Recipe]]) -> tuple[dict[str, list[str]], str | None]:
    """Axolotl 0.19's own schema over the config each recipe renders (its raw `axolotl:` block applied), as
    `vlm3 train` checks it, by recipe field: {path: problems}, and a sentence when it could not be checked."""
    import json
    import subprocess
    import tempfile

    import yaml

    from vlm3.recipe.families import FamilyError
    from vlm3.train.render import recipe_field, render_axolotl_config
    from vlm3.train.trainer_env import TrainerEnv, TrainerEnvMissing

    if not recipes:
        return {}, None
    try:
        env = TrainerEnv.locate()
    except TrainerEnvMissing:
        return {}, ("Axolotl's schema was not checked: no trainer environment here (`make trainer-env`, or "
                    "VLM3_TRAINER_PYTHON); `vlm3 train` and `vlm3 modal train` check it before training")
    found: dict[str, list[str]] = {}
    unread: list[str] = []
    with tempfile.TemporaryDirectory(prefix="vlm3-validate-") as folder:
        jobs, paths = [], []
        for number, (path, recipe) in enumerate(recipes):
            try:
                config = render_axolotl_config(recipe, base_model=recipe.model.base)
            except FamilyError as exc:
                unread.append(f"{path} ({exc})")
                continue
            config_file = Path(folder) / f"{number}.yaml"
            config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
            jobs.append({"config": str(config_file), "gpu": recipe.compute.gpu_type, "count": max(recipe.compute.gpu_count, 1)})
            paths.append((path, recipe))
        if jobs:
            proc = subprocess.run([str(env.python), "-c", AXOLOTL_SCHEMA_SCRIPT], input=json.dumps(jobs), capture_output=True,
                                  text=True, env=env.environ())
            lines = [line for line in proc.stdout.splitlines() if line.startswith("[")]
            if not lines:
                tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])
                return {}, f"Axolotl's schema was not checked: the trainer environment failed (exit {proc.returncode}): {tail}"
            for (path, recipe), result in zip(paths, json.loads(lines[-1])):
                overridden = set(recipe.axolotl)
                found[path] = [(f"{recipe_field(e['field'], overridden)}: {e['message']} (Axolotl's schema, key {e['field']})"
                                if e["field"] else f"Axolotl's schema: {e['message']}") for e in result["errors"]]
    note = f"Axolotl's schema was not checked for {'; '.join(unread)}" if unread else None
    return found, note


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
        from vlm3.core.console import UserError

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
    p.add_argument("--show", type=int, default=20, help="causes of problems to print (each grouped with its count and first places; the rest are counted)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("plan", help="tokens, FLOPs, hours, dollars and memory of a recipe")
    p.add_argument("recipe")
    p.add_argument("--gpu", action="append", metavar="NAME[:N]",
                   help="price on this card instead (any in vlm3's GPU table, e.g. A10G or A100-80GB:4; repeat for more; cpu)")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("resize", help="write pre-resized images at the recipe's pixel cap (content-hash cached)")
    p.add_argument("recipe")
    p.add_argument("--out", help="folder for the copies (default runs/<recipe>/resized/max<max_pixels>)")
    p.set_defaults(func=cmd_resize)

