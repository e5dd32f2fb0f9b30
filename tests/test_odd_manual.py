"""The whole CPU loop on a manual not shaped like the sample: odd page formats, several pages or none per row, other metadata names.

    make test-manuals                                          # this tier (a few minutes on 2 cores)
    .venv/bin/python -m pytest -q -m manuals -s                # the same, printing the measured numbers

The data is tests/odd_manual.py's Kaminari KX750 manual (RGB, greyscale, CMYK, 16-bit, WebP, RGBA,
palette and EXIF-rotated pages; rows with one page, two pages through `images` or through image parts,
and none). For Qwen2-VL and Qwen3-VL's tiny models, through the CLI: `vlm3 check`, `plan`,
`train --merge`, `eval --only val --no-judge` of the merged and the base model, `weak` and `compare`.

The measurement: Axolotl 0.19 adds `labels.numel()` of every micro-batch to `tokens/total`
(`core/trainers/base.py`, `compute_loss`): padded positions count, masked or not. With
`curriculum_sampling` (a sequential sampler) the micro-batches are the file's rows in order, so the
logged count after the last step is exactly sum over batches of (rows x longest row). That is checked
against the processor's own count of each converted row (what the collator makes), and against
vlm3's planned `length` of each row (run/data/train.jsonl, the count `vlm3 check` and `plan` make);
visual tokens are checked row by row as the number of <|image_pad|> tokens the processor makes.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from data_adapters.images import oriented_size
from data_adapters.pipeline import read_pipeline
from data_adapters.tokens import visual_tokens
from tests.conftest import ROOT, run_cli
from tests.test_families import in_trainer
from tests.odd_manual import DOCUMENT, METADATA_NAMES, write_odd_manual, write_odd_recipe
from vlm3.recipe.families import FAMILIES
from vlm3.demo.tiny_model import FOLDERS

pytestmark = [pytest.mark.trainer, pytest.mark.manuals]

LOOP_FAMILIES = ["qwen2_vl", "qwen3_vl"]
MICRO_BATCH = 4  # 40 rows: 10 steps, each micro-batch mixing one-page, two-page and text-only rows


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, Path]:
    for family in LOOP_FAMILIES:
        proc = run_cli("tiny-model", "--family", family)  # a complete folder is reused
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return {family: ROOT / FOLDERS[family] for family in LOOP_FAMILIES}


@pytest.fixture(scope="module", params=LOOP_FAMILIES)
def odd_loop(request, tmp_path_factory, tiny_models) -> dict:
    """The odd manual through check, plan, train --merge, eval (merged and base), weak and compare."""
    name = request.param
    root = tmp_path_factory.mktemp(f"odd-{name}")
    manual = write_odd_manual(root)
    run_name = f"odd-{name.replace('_', '-')}"
    # curriculum_sampling: Axolotl's sequential sampler, so each step's micro-batch is known (the next rows of the file).
    recipe = write_odd_recipe(manual, tiny_models[name], root / "recipe.yaml", name=run_name,
                              axolotl={"curriculum_sampling": True}, micro_batch_size=MICRO_BATCH)
    out = {"name": name, "family": FAMILIES[name], "tiny": tiny_models[name], "manual": manual, "recipe": recipe, "root": root}
    out["check"] = run_cli("check", str(recipe), "--out", str(root / "preflight"))
    out["plan"] = run_cli("plan", str(recipe))
    out["train"] = run_cli("train", str(recipe), "--merge", "--epochs", "1", "--runs-root", str(root / "runs"), timeout=1500)
    run = out["run"] = root / "runs" / run_name / "latest"
    assert run.exists(), out["train"].stdout[-3000:] + out["train"].stderr[-3000:]
    out["eval"] = run_cli("eval", str(run), "--only", "val", "--no-judge", timeout=900)
    out["eval_base"] = run_cli("eval", str(run), "--base", "--only", "val", "--no-judge", timeout=900)
    out["weak"] = run_cli("weak", str(run / "eval" / "finetuned"))
    out["compare"] = run_cli("compare", str(run / "eval" / "base"), str(run / "eval" / "finetuned"))
    return out


def show(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout[-3000:] + proc.stderr[-3000:]


# -- what the processor makes of each converted row, and of each evaluated sample --------------

PROCESSOR_COUNTS = """
import json, os, sys
import yaml
from transformers import AutoProcessor
from axolotl.utils.chat_templates import get_chat_template
from data_adapters.images import open_page

request = json.loads(sys.stdin.read())
run = request["run"]
cfg = yaml.safe_load(open(os.path.join(run, "axolotl.yaml")))
# As Axolotl's trainer loads them (loaders/processor.py, utils/chat_templates): the base model's processor with the
# config's processor_kwargs, and the config's chat template.
processor = AutoProcessor.from_pretrained(cfg["base_model"], **(cfg.get("processor_kwargs") or {}))
template = get_chat_template(cfg["chat_template"], jinja_template=cfg.get("chat_template_jinja"), tokenizer=processor.tokenizer)
tokenizer = processor.tokenizer
pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
rows = []
home = os.getcwd()
os.chdir(run)  # the converted rows name normalised copies relative to the run directory, where the trainer runs
for line in open("data/train.jsonl", encoding="utf-8"):
    row = json.loads(line)
    # One row alone, as the collator makes it (MultiModalChatDataCollator.process_rows): no padding.
    batch = processor.apply_chat_template([row["messages"]], add_generation_prompt=False, tokenize=True, return_dict=True,
                                          return_tensors="pt", chat_template=template)
    ids = batch["input_ids"][0]
    answers = [m for m in row["messages"] if m["role"] == "assistant"]
    rows.append({"length": row["length"], "tokens": int(ids.shape[0]), "image_pads": int((ids == pad).sum()),
                 "pages": [part["path"] for m in row["messages"] for part in m["content"] if part["type"] == "image"],
                 # the answer's tokens and the <|im_end|> closing its turn: what the assistant-only mask trains
                 "trainable": sum(len(tokenizer.encode("".join(p["text"] for p in m["content"] if p["type"] == "text"),
                                                       add_special_tokens=False)) + 1 for m in answers)})
os.chdir(home)
served = {}
for eval_dir in request["eval_dirs"]:
    samples = [json.loads(l) for l in open(os.path.join(eval_dir, "samples.jsonl"), encoding="utf-8") if l.strip()]
    predictions = {}
    for l in open(os.path.join(eval_dir, "predictions.jsonl"), encoding="utf-8"):
        if l.strip():
            p = json.loads(l)
            predictions[p["id"]] = p
    counts = {}
    cache = {}
    for sample in samples:
        folder = request["served"][eval_dir]  # the served model's folder: its processor and chat template
        if folder not in cache:
            cache[folder] = AutoProcessor.from_pretrained(folder)
        served_processor = cache[folder]
        pages = sample.get("images") or []
        turn = ([{"role": "system", "content": [{"type": "text", "text": sample["system"]}]}] if sample.get("system") else [])
        turn.append({"role": "user", "content": [{"type": "image"} for _ in pages] + [{"type": "text", "text": sample["question"]}]})
        prompt = served_processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        batch = served_processor(text=[prompt], images=[open_page(p) for p in pages] or None, return_tensors="pt")
        counts[sample["id"]] = int(batch["input_ids"].shape[1])
    served[eval_dir] = counts
print(json.dumps({"rows": rows, "served": served}))
"""


@pytest.fixture(scope="module")
def processor_counts(odd_loop) -> dict:
    run = odd_loop["run"]
    eval_dirs = [str(run / "eval" / label) for label in ("finetuned", "base") if (run / "eval" / label / "predictions.jsonl").exists()]
    # What each side served (predictions carry the served name, not a folder): the merge, and the recipe's base.
    base = yaml.safe_load((run / "axolotl.yaml").read_text())["base_model"]
    served = {d: str(run / "output" / "merged") if d.endswith("finetuned") else base for d in eval_dirs}
    return in_trainer(PROCESSOR_COUNTS, json.dumps({"run": str(run), "eval_dirs": eval_dirs, "served": served}))


def planned_visual(odd_loop, split: str = "train") -> list[int]:
    """vlm3's visual tokens of each row: each page at its upright size, the family's factor, summed per row."""
    recipe = yaml.safe_load(odd_loop["recipe"].read_text())
    images, factor = recipe["images"], odd_loop["family"].factor
    rows, problems = read_pipeline(odd_loop["manual"][split], METADATA_NAMES)
    assert not problems
    root = odd_loop["manual"]["images_root"]
    return [sum(visual_tokens(*oriented_size(root / page), images["min_pixels"], images["max_pixels"], factor) for page in row.images)
            for row in rows]


def logged(run: Path, key: str) -> list[int]:
    log = (run / "logs" / "train.log").read_text(errors="replace")
    return [int(v) for v in re.findall(rf"'{re.escape(key)}': '?(\d+)", log)]


def padded(lengths: list[int], size: int = MICRO_BATCH) -> list[int]:
    """Positions of each sequential micro-batch: its rows x its longest row (what labels.numel() is)."""
    return [len(lengths[i:i + size]) * max(lengths[i:i + size]) for i in range(0, len(lengths), size)]


def steps_of(cumulative: list[int]) -> list[int]:
    return [b - a for a, b in zip([0, *cumulative], cumulative)]


# -- check and plan -----------------------------------------------------------------------------


def test_check_reports_pages_rows_and_sections(odd_loop):
    check = odd_loop["check"]
    assert check.returncode == 0, show(check)
    manual = odd_loop["manual"]
    report = json.loads((odd_loop["root"] / "preflight" / "check.json").read_text())
    counts = report["counts"]
    assert counts["train_rows"] == counts["kept_train_rows"] == 40 and counts["val_rows"] == counts["kept_val_rows"] == 12
    assert counts["errors"] == counts["warnings"] == 0, report["problems"]
    shapes = manual["counts"]
    assert counts["multi_page_rows"] == sum(shapes[s]["two_images_key"] + shapes[s]["two_content_parts"] for s in ("train", "val")) == 15
    assert counts["text_only_rows"] == shapes["train"]["text_only"] + shapes["val"]["text_only"] == 5
    assert counts["max_images_per_row"] == 2 and counts["images"] == len(manual["pages"]) == 24
    pages = report["pages"]
    assert pages["rotated"] == len(manual["by_format"]["exif_rotated_jpeg"]) == 3
    assert pages["formats"] == {"JPEG": 9, "PNG": 12, "WEBP": 3}
    assert pages["modes"] == {"CMYK": 3, "I;16": 3, "L": 3, "P": 3, "RGB": 9, "RGBA": 3}
    normalised = {entry["image"]: entry for entry in pages["normalised"]}
    assert set(normalised) == {image for image, page in manual["pages"].items() if page["needs_copy"]}
    for image, entry in normalised.items():
        page = manual["pages"][image]
        assert (entry["format"], entry["mode"]) == (page["pil_format"], page["mode"]) and entry["notes"], entry
    # The mapping names every section: no metadata warning, nothing grouped as "unknown" on the card.
    assert not [code for code in report["by_code"] if code.startswith("metadata")]
    card = (odd_loop["root"] / "preflight" / "dataset_card.html").read_text()
    assert "unknown" not in card.lower()
    assert all(section in card for section in ("Electrical", "Fuel system", "Chassis"))


def test_plan_prices_the_planned_visual_tokens(odd_loop):
    plan = odd_loop["plan"]
    assert plan.returncode == 0, show(plan)
    samples = re.search(r"samples\s+([\d,]+)", plan.stdout)
    visual = re.search(r"visual tokens\s+([\d,]+)", plan.stdout)
    assert samples and visual, plan.stdout[-2000:]
    assert int(samples.group(1).replace(",", "")) == 40
    assert int(visual.group(1).replace(",", "")) == sum(planned_visual(odd_loop))


# -- training ------------------------------------------------------------------------------------


def test_train_converts_every_shape_and_merges(odd_loop):
    train, run = odd_loop["train"], odd_loop["run"]
    assert train.returncode == 0, show(train)
    status = json.loads((run / "status.json").read_text())
    assert all(status["stages"][s]["state"] == "done" for s in ("prepare", "validate", "train", "merge")), status
    assert json.loads((run / "merge_check.json").read_text())["ok"]
    report = json.loads((run / "data" / "data_report.json").read_text())
    manual = odd_loop["manual"]
    assert report["normalised_pages"] == manual["counts"]["normalised_pages"] == 18
    rows = [json.loads(line) for line in (run / "data" / "train.jsonl").read_text().splitlines()]
    pipeline, _ = read_pipeline(manual["train"], METADATA_NAMES)
    assert len(rows) == len(pipeline) == 40
    for row, source in zip(rows, pipeline):
        paths = [p["path"] for m in row["messages"] for p in m["content"] if p["type"] == "image"]
        assert len(paths) == len(source.images)
        for path, image in zip(paths, source.images):
            if manual["pages"][image]["needs_copy"]:
                assert path.startswith("data/pages/") and path.endswith(".png") and (run / path).is_file(), (image, path)
            else:
                assert path == str(manual["images_root"] / image)


def test_visual_tokens_planned_equal_the_processors_image_pads(odd_loop, processor_counts, capsys):
    """Row by row: the <|image_pad|> tokens the processor makes of the converted row (normalised copies included)
    equal vlm3's visual tokens for the row's pages at their upright sizes."""
    planned = planned_visual(odd_loop)
    made = [row["image_pads"] for row in processor_counts["rows"]]
    with capsys.disabled():
        print(f"\n[{odd_loop['name']}] visual tokens: planned {sum(planned)}, <|image_pad|> {sum(made)} over {len(made)} rows")
    assert made == planned
    report = json.loads((odd_loop["root"] / "preflight" / "check.json").read_text())  # `vlm3 check`'s mean over both splits
    both = planned + planned_visual(odd_loop, "val")
    assert report["tokens"]["visual_mean"] == pytest.approx(sum(both) / len(both))


def test_axolotl_counts_every_padded_position_of_each_micro_batch(odd_loop, processor_counts):
    """What `tokens/total` is: per step, the micro-batch's rows x its longest row, from the processor's own count of
    each row (padding included); `tokens/trainable` is the answers and their closing <|im_end|>."""
    run = odd_loop["run"]
    total, trainable = logged(run, "tokens/total"), logged(run, "tokens/trainable")
    tokens = [row["tokens"] for row in processor_counts["rows"]]
    assert len(total) == len(trainable) == -(-len(tokens) // MICRO_BATCH)
    assert steps_of(total) == padded(tokens)
    assert trainable[-1] == sum(row["trainable"] for row in processor_counts["rows"])


def test_logged_tokens_equal_the_planned_lengths(odd_loop, processor_counts, capsys):
    """vlm3's planned `length` of each row (visual + text + template) against the trainer: row by row against the
    processor, and the logged `tokens/total` against the same micro-batches built from the planned lengths."""
    run = odd_loop["run"]
    total, trainable = logged(run, "tokens/total"), logged(run, "tokens/trainable")
    planned = [row["length"] for row in processor_counts["rows"]]
    tokens = [row["tokens"] for row in processor_counts["rows"]]
    gaps = sorted({p - t for p, t in zip(planned, tokens)})
    with capsys.disabled():
        print(f"\n[{odd_loop['name']}] tokens/total logged {total[-1]}; from the processor's rows {sum(padded(tokens))} "
              f"(unpadded {sum(tokens)}); from vlm3's planned lengths {sum(padded(planned))} (unpadded {sum(planned)}); "
              f"planned minus processor per row: {gaps}; tokens/trainable logged {trainable[-1]}; "
              f"{len(total)} steps of micro-batch {MICRO_BATCH}, 1 epoch")
    assert planned == tokens, f"planned minus processor per row: {gaps}"
    assert total[-1] == sum(padded(planned))


# -- evaluation ----------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["finetuned", "base"])
def test_eval_answers_every_sample_with_the_processors_prompt(odd_loop, processor_counts, label):
    proc = odd_loop["eval" if label == "finetuned" else "eval_base"]
    assert proc.returncode == 0, show(proc)
    eval_dir = odd_loop["run"] / "eval" / label
    summary = json.loads((eval_dir / "summary.json").read_text())
    assert summary["counts"]["samples"] == summary["counts"]["answered"] == 12 and summary["counts"]["errors"] == 0
    samples = [json.loads(line) for line in (eval_dir / "samples.jsonl").read_text().splitlines() if line.strip()]
    assert sorted(len(s.get("images") or []) for s in samples) == [0] + [1] * 8 + [2] * 3
    assert json.loads((eval_dir / "meta.json").read_text()).get("document") == DOCUMENT
    assert {s["section"] for s in samples} == {"Electrical", "Fuel system", "Chassis"}  # mapped from section_title
    predictions = {p["id"]: p for p in map(json.loads, (eval_dir / "predictions.jsonl").read_text().splitlines())}
    served = processor_counts["served"][str(eval_dir)]
    prompt_tokens = {s["id"]: predictions[s["id"]]["usage"]["prompt_tokens"] for s in samples}
    assert prompt_tokens == served


def test_weak_ranks_named_sections_and_each_page_under_its_own(odd_loop):
    weak = odd_loop["weak"]
    assert weak.returncode == 0, show(weak)
    assert "unknown section" not in weak.stdout
    eval_dir = odd_loop["run"] / "eval" / "finetuned"
    pages = [json.loads(line) for line in (eval_dir / "weak_pages.jsonl").read_text().splitlines() if line.strip()]
    assert pages
    manual = odd_loop["manual"]
    val_pages = {image for image, page in manual["pages"].items() if page["split"] == "val"}
    assert {p["image_ref"] for p in pages} <= val_pages  # each page of a two-page sample is its own line
    # A page's section is the page's own, not that of a two-page sample it appeared in first.
    wrong = {p["image_ref"]: p["section"] for p in pages if p["section"] != manual["pages"][p["image_ref"]]["section"]}
    assert not wrong, f"pages listed under another page's section: {wrong}"


def test_compare_pairs_every_sample(odd_loop):
    compare = odd_loop["compare"]
    assert compare.returncode == 0, show(compare)
    assert "12 paired samples" in compare.stdout
    out = odd_loop["run"] / "eval" / "compare-base-vs-finetuned.json"
    assert out.is_file(), compare.stdout[-1000:]
