"""Preflight: every dataset check has a failing and a passing fixture; token estimates and plan arithmetic."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from PIL import Image

from data_adapters.checks import scan_dataset
from data_adapters.pipeline import read_pipeline
from data_adapters.tokens import resized_size, visual_tokens
from tests.conftest import run_cli
from vlm3.plan.estimate import DatasetTokens, Training, batch_flops, plan_run, shape_of
from vlm3.recipe.schema import parse_recipe

Q = {"role": "user", "content": "What is the torque?"}
A = {"role": "assistant", "content": "40 Nm."}


def line(image="images/p.jpg", conversations=None, **extra):
    return {"image": image, "conversations": conversations or [Q, A], "metadata": {"page": "1", "section": "11 Engine", "content_type": "spec"}, **extra}


def dataset(tmp: Path, train: list[dict], val: list[dict] | None = None, sizes: dict[str, tuple[int, int]] | None = None, seq: int = 4096,
            long_rows: str = "fail", data: dict | None = None):
    root = tmp / "td"
    (root / "images").mkdir(parents=True, exist_ok=True)
    for name, size in {"p.jpg": (850, 1100), "q.jpg": (850, 1100), **(sizes or {})}.items():
        Image.new("RGBA" if name.endswith(".png") else "RGB", size, (0, 0, 0, 0) if name.endswith(".png") else "white").save(root / "images" / name)
    (root / "vlm_train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train))
    (root / "vlm_val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (val if val is not None else [line("images/q.jpg")])))
    recipe = parse_recipe({"name": "t", "compute": {"gpu": "cpu"}, "train": {"sequence_len": seq},
                           "data": {"train": str(root / "vlm_train.jsonl"), "val": str(root / "vlm_val.jsonl"), "images_root": str(root), "long_rows": long_rows, **(data or {})}})
    return root, recipe


def codes(tmp, train, val=None, **kw) -> dict[str, str]:
    val = kw.pop("val", val)
    root, recipe = dataset(tmp, train, val, **kw)
    rows_t, pt = read_pipeline(recipe.data.train, recipe.data.metadata)
    rows_v, pv = read_pipeline(recipe.data.val, recipe.data.metadata)
    scan = scan_dataset(rows_t, rows_v, root, recipe)
    return {p.code: p.severity for p in pt + pv + scan.problems}


CHECKS = [
    # (name, failing train rows, extra kwargs, code, severity)
    ("missing image", [line("images/none.jpg")], {}, "image_missing", "error"),
    ("outside root", [line("../outside.jpg")], {}, "image_outside_root", "error"),
    ("aspect ratio", [line("images/strip.jpg")], {"sizes": {"strip.jpg": (4020, 20)}}, "image_aspect", "error"),
    ("tiny image", [line("images/dot.jpg")], {"sizes": {"dot.jpg": (20, 30)}}, "image_size", "warning"),
    ("bad role", [line(conversations=[{"role": "bot", "content": "x"}, A])], {}, "role", "error"),
    ("turn order", [line(conversations=[Q, Q, A])], {}, "turn_order", "error"),
    ("ends with user", [line(conversations=[Q, A, Q])], {}, "turn_order", "error"),
    ("empty answer", [line(conversations=[Q, {"role": "assistant", "content": " "}])], {}, "empty_turn", "error"),
    ("duplicate", [line(), line()], {}, "duplicate", "warning"),
    ("too long (fail)", [line()], {"seq": 300}, "too_long", "error"),
    ("too long (drop)", [line()], {"seq": 300, "long_rows": "drop"}, "too_long", "warning"),
    ("too long (drop), every row", [line()], {"seq": 300, "long_rows": "drop"}, "dropped_most", "error"),
    ("too many pages", [line(None, images=["images/p.jpg", "images/q.jpg"])], {"data": {"max_images_per_row": 1}}, "too_many_images", "error"),
    ("second page missing", [line(None, images=["images/p.jpg", "images/none.jpg"])], {}, "image_missing", "error"),
    ("no section", [{**line(), "metadata": {"page": "1"}}], {"val": [{**line("images/q.jpg"), "metadata": {"page": "2"}}]},
     "metadata_missing", "warning"),
    ("mapping names nothing", [line()], {"data": {"metadata": {"section": "section_title"}}}, "metadata_map", "error"),
    ("a page listed twice", [line(None, images=["images/p.jpg", "images/p.jpg"])], {}, "repeated_page", "warning"),
    ("shared page in a two-page val row", [line()], {"val": [line(None, images=["images/q.jpg", "images/p.jpg"])]}, "leakage", "warning"),
]


@pytest.mark.parametrize("name,train,kwargs,code,severity", CHECKS, ids=[c[0] for c in CHECKS])
def test_each_check_fails_its_fixture_and_passes_a_clean_one(tmp_path, name, train, kwargs, code, severity):
    found = codes(tmp_path / "bad", train, **kwargs)
    assert found.get(code) == severity, found
    assert codes(tmp_path / "good", [line()]) == {}


def test_leakage_is_a_warning_naming_the_page(tmp_path):
    found = codes(tmp_path, [line("images/p.jpg")], val=[line("images/p.jpg", conversations=[{"role": "user", "content": "Other?"}, A])])
    assert found == {"leakage": "warning"}


def test_undecodable_image(tmp_path):
    root, recipe = dataset(tmp_path, [line("images/bad.jpg")])
    (root / "images" / "bad.jpg").write_bytes(b"not an image")
    rows, _ = read_pipeline(recipe.data.train)
    assert {p.code for p in scan_dataset(rows, [], root, recipe).problems} == {"image_undecodable"}


def test_prepare_drops_long_rows_when_the_recipe_says_so(tmp_path):
    from data_adapters.convert import prepare_dataset

    root, recipe = dataset(tmp_path, [line(), line("images/q.jpg", conversations=[{"role": "user", "content": "x " * 2000}, A])], seq=1400, long_rows="drop")
    report = prepare_dataset(recipe, tmp_path / "out")
    assert report.dropped == 1 and report.train_rows == 1


@pytest.mark.parametrize(
    "width,height,max_pixels,tokens",
    [
        (1700, 2200, 1280 * 28 * 28, 1240),  # the issue's hand-worked page at ~1 MP
        (1700, 2200, 16384 * 28 * 28, 4819),  # the model's default cap
        (768, 768, 1280 * 28 * 28, 729),  # rounds 768 to 756 = 27 x 28 per side
        (56, 56, 1280 * 28 * 28, 4),
        (20, 20, 1280 * 28 * 28, 4),  # scaled up to min_pixels 56*56
    ],
)
def test_visual_tokens_hand_worked(width, height, max_pixels, tokens):
    assert visual_tokens(width, height, 56 * 56, max_pixels) == tokens


def test_plan_arithmetic_hand_worked():
    """1,000 pages of 1700x2200 at 1280*28*28 (1,240 visual tokens) + 160 text tokens, LoRA with checkpointing, 3 epochs.
    The per-batch FLOPs are hand-worked in tests/test_plan.py; here: batches, epochs, hours and dollars."""
    recipe = parse_recipe({"name": "p", "model": {"base": "Qwen/Qwen2-VL-7B-Instruct"}})
    data = DatasetTokens(samples=1000, text_tokens=160_000, visual_tokens=1_240_000, max_row_tokens=1400)
    plan = plan_run(recipe, data, gpus=["H100"])
    per_batch = batch_flops(shape_of("Qwen/Qwen2-VL-7B-Instruct"), [1400] * 4, [1240] * 4, Training(gradient_checkpointing=True))
    expected = 3 * 250 * per_batch.total  # equal rows: no padding; no validation rows: no evaluation
    assert plan.flops == pytest.approx(expected)
    assert plan.flops_per_token == pytest.approx(expected / (3 * 1_400_000))
    assert 6 * 7.07e9 < plan.flops_per_token < 8 * 7.07e9  # 6N with checkpointing, plus attention and the vision tower
    assert plan.steps == 3 * math.ceil(1000 / 16)
    h100 = plan.gpus[0]
    assert h100.hours[0] == pytest.approx(expected / (989e12 * 0.45) / 3600)
    assert h100.usd[1] == pytest.approx(h100.hours[1] * 3.95 + h100.fixed_usd)
    assert h100.fits


def test_plan_warns_when_memory_does_not_fit_and_when_qlora_wastes_an_80gb_card():
    data = DatasetTokens(samples=100, text_tokens=10_000, visual_tokens=100_000, max_row_tokens=4000)
    small = plan_run(parse_recipe({"name": "p", "compute": {"gpu": "A10G"}, "train": {"gradient_checkpointing": False, "micro_batch_size": 8}}), data)
    assert any("will not fit" in w for w in small.warnings)
    qlora = plan_run(parse_recipe({"name": "p", "train": {"method": "qlora"}}), data)
    assert any("1.8x slower" in w for w in qlora.warnings)


def test_check_cli_exit_codes_report_and_card(tmp_path):
    root, _ = dataset(tmp_path, [line(), line()])  # a duplicate: a warning only
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ncompute: {{gpu: cpu}}\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}}}\n")
    out = tmp_path / "pf"
    ok = run_cli("check", str(recipe_file), "--out", str(out))
    assert ok.returncode == 0, ok.stderr
    assert "vlm_train.jsonl:2" in ok.stdout and "duplicate" in ok.stdout
    report = json.loads((out / "check.json").read_text())
    assert report["counts"]["warnings"] == 1 and report["counts"]["errors"] == 0
    assert (out / "dataset_card.html").read_text().count("sequence_len") >= 1
    assert run_cli("check", str(recipe_file), "--out", str(out), "--strict").returncode == 1
    (root / "images" / "p.jpg").unlink()
    bad = run_cli("check", str(recipe_file), "--out", str(out))
    assert bad.returncode == 1 and "not found" in bad.stdout


def test_plan_cli(tmp_path):
    root, _ = dataset(tmp_path, [line()])
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}}}\n")
    proc = run_cli("plan", str(recipe_file))
    assert proc.returncode == 0, proc.stderr
    assert "H100" in proc.stdout and "0.4 MP" in proc.stdout and "2.0 MP" in proc.stdout


def test_resize_writes_copies_and_leaves_originals(tmp_path):
    root, _ = dataset(tmp_path, [line()], sizes={"p.jpg": (1700, 2200)})
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}}}\n")
    before = (root / "images" / "p.jpg").read_bytes()
    out = tmp_path / "resized"
    first = run_cli("resize", str(recipe_file), "--out", str(out))
    assert first.returncode == 0, first.stderr
    with Image.open(out / "images" / "p.jpg") as img:
        assert img.size == (868, 1120)  # 31 x 40 merged patches = 1,240 visual tokens
    assert (root / "images" / "p.jpg").read_bytes() == before
    again = run_cli("resize", str(recipe_file), "--out", str(out))
    assert "0 resized, 2 reused" in again.stdout


@pytest.mark.trainer
def test_visual_token_estimate_equals_the_real_processor():
    """transformers' own Qwen2-VL image processor, on many random sizes and three pixel caps."""
    import subprocess

    from vlm3.train.trainer_env import TrainerEnv

    rng = random.Random(7)
    cases = [(rng.randint(28, 3000), rng.randint(28, 3000), cap) for _ in range(300) for cap in (12544, 602112, 1003520)]
    cases = [c for c in cases if max(c[0], c[1]) / min(c[0], c[1]) <= 200]
    code = (
        "import json,sys\n"
        "from transformers import Qwen2VLImageProcessor\n"
        "cases=json.loads(sys.stdin.read()); out=[]\n"
        "for w,h,cap in cases:\n"
        "    p=Qwen2VLImageProcessor(min_pixels=3136,max_pixels=cap)\n"
        "    out.append(p.get_number_of_image_patches(h,w,{})//4)\n"
        "print(json.dumps(out))\n"
    )
    env = TrainerEnv.locate()
    proc = subprocess.run([str(env.python), "-c", code], input=json.dumps(cases), capture_output=True, text=True, env=env.environ(), check=True)
    real = json.loads(proc.stdout.splitlines()[-1])
    ours = [visual_tokens(w, h, 3136, cap) for w, h, cap in cases]
    assert ours == real
    assert resized_size(2200, 1700, 3136, 1003520) == (1120, 868)


def test_resize_refuses_to_write_into_the_images_root(tmp_path):
    root, _ = dataset(tmp_path, [line()])
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}}}\n")
    before = (root / "images" / "p.jpg").read_bytes()
    for out in (root, root / "images", root.parent):
        proc = run_cli("resize", str(recipe_file), "--out", str(out))
        assert proc.returncode == 1 and "overlaps the images root" in proc.stderr
    assert (root / "images" / "p.jpg").read_bytes() == before


def test_check_stops_on_probes_that_eval_would_refuse(tmp_path):
    root, _ = dataset(tmp_path, [line()])
    probes = tmp_path / "probes.jsonl"
    probes.write_text("\ufeff" + json.dumps({"id": "a", "category": "torque_spec", "image": "images/p.jpg", "question": "Q?", "expected_answer": "40 Nm"}) + "\n"
                      + json.dumps({"id": "b", "category": "torque_spec", "image": "images/none.jpg", "question": "Q?", "expected_answer": "40 Nm"}) + "\n")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ncompute: {{gpu: cpu}}\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}, probes: {probes}}}\n")
    proc = run_cli("check", str(recipe_file), "--out", str(tmp_path / "pf"))
    # An error: the recipe evaluates with these probes, so it must stop before the GPU is paid for.
    assert proc.returncode == 1, proc.stdout
    assert "probes.jsonl:2" in proc.stdout and "images/none.jpg" in proc.stdout and "vlm3 eval` stops" in proc.stdout
    assert "probes.jsonl:1" not in proc.stdout  # the BOM is accepted


PROBE = {"id": "a", "category": "torque_spec", "image": "images/p.jpg", "question": "Q?"}


@pytest.mark.parametrize("fields, field, instead", [
    ({"expected_keywords": [""]}, "expected_keywords[0] is blank", "remove it or write the word"),
    ({"expected_keywords": ["gasket", "   "]}, "expected_keywords[1] is blank", "remove it or write the word"),
    ({"expected_keywords": [5]}, "expected_keywords[0] is a number (5), not text", 'write it in quotes, e.g. "5"'),
    ({"expected_keywords": "gasket"}, 'expected_keywords is text ("gasket"), not a list', '"expected_keywords": ["gasket"]'),
    ({"expected_keywords": []}, "expected_keywords is empty", "list the words the answer must contain"),
    ({"expected_answer": 45}, "expected_answer is a number (45), not text", '"expected_answer": "45 Nm"'),
    ({"expected_answer": " "}, "expected_answer is blank", "write the reference answer"),
    ({}, "nothing to grade: give exactly one of expected_answer and expected_keywords", '"expected_answer": "45 Nm"'),
    ({"question": None}, "missing question", '"question": "'),
])
def test_probe_fields_that_grade_nothing_or_crash_the_scorer_are_problems_at_their_line(tmp_path, fields, field, instead):
    from data_adapters.samples import load_probes

    root, _ = dataset(tmp_path, [line()])
    probes = tmp_path / "probes.jsonl"
    good = {**PROBE, "id": "good", "expected_answer": "40 Nm"}
    bad = {key: value for key, value in {**PROBE, "expected_keywords": ["x"], **fields}.items() if value is not None}
    if "expected_answer" in fields or not fields:
        bad.pop("expected_keywords")
    probes.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    samples, problems = load_probes(probes, root)
    assert [s.id for s in samples] == ["probe:good"]
    assert [(p.line, p.code) for p in problems] == [(2, "probe")], problems
    assert field in problems[0].message and instead in problems[0].message


def probe_recipe(tmp_path, probe: dict) -> Path:
    root, _ = dataset(tmp_path, [line()])
    probes = tmp_path / "probes.jsonl"
    probes.write_text(json.dumps(probe) + "\n")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ncompute: {{gpu: cpu}}\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}, probes: {probes}}}\n")
    return recipe_file


def test_check_and_eval_refuse_a_blank_keyword_before_anything_runs(tmp_path):
    recipe_file = probe_recipe(tmp_path, {**PROBE, "expected_keywords": ["", 5]})
    checked = run_cli("check", str(recipe_file), "--out", str(tmp_path / "pf"))
    assert checked.returncode == 1 and "Traceback" not in checked.stdout + checked.stderr
    for message in ("probes.jsonl:1: probe: expected_keywords[0] is blank", "probes.jsonl:1: probe: expected_keywords[1] is a number (5)"):
        assert message in checked.stdout, checked.stdout
    out = tmp_path / "e"
    # An endpoint nothing listens on: eval must stop on the data before it asks anything.
    evaluated = run_cli("eval", str(recipe_file), "--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "--only", "probes", "--out", str(out))
    assert evaluated.returncode == 1 and "Traceback" not in evaluated.stderr
    assert "probes.jsonl:1: expected_keywords[0] is blank" in evaluated.stderr, evaluated.stderr
    assert not (out / "predictions.jsonl").exists() and not (out / "samples.jsonl").exists()


def test_resize_flattens_transparent_pages_onto_white(tmp_path):
    root, _ = dataset(tmp_path, [line("images/clear.png")], sizes={"clear.png": (850, 1100)})
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}}}\n")
    out = tmp_path / "resized"
    assert run_cli("resize", str(recipe_file), "--out", str(out)).returncode == 0
    with Image.open(out / "images" / "clear.png") as img:
        assert img.mode == "RGB" and img.getextrema() == ((255, 255),) * 3


def test_resize_reports_empty_and_truncated_images_by_file_and_line_and_writes_nothing(tmp_path):
    root, _ = dataset(tmp_path, [line(), line("images/empty.jpg"), line("images/cut.jpg")])
    (root / "images" / "empty.jpg").write_bytes(b"")
    whole = (root / "images" / "p.jpg").read_bytes()
    (root / "images" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}}}\n")
    out = tmp_path / "resized"
    proc = run_cli("resize", str(recipe_file), "--out", str(out))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "vlm_train.jsonl:2: image 'images/empty.jpg' cannot be decoded" in proc.stderr
    assert "vlm_train.jsonl:3: image 'images/cut.jpg' cannot be decoded" in proc.stderr
    assert not out.exists()


@pytest.mark.trainer  # `train` finds the trainer environment before it reads the data
def test_train_stops_before_training_on_bad_probes_and_lists_every_problem_of_a_line(tmp_path):
    root, _ = dataset(tmp_path, [line()])
    probes = tmp_path / "probes.jsonl"
    # One line, three problems: no question, both expected fields, an image that is not there.
    probes.write_text(json.dumps({"id": "a", "image": "images/none.jpg", "expected_answer": "40 Nm", "expected_keywords": ["x"]}) + "\n")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ncompute: {{gpu: cpu}}\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}, probes: {probes}}}\n")
    proc = run_cli("train", str(recipe_file), "--runs-root", str(tmp_path / "runs"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    for message in ("probes.jsonl:1: probe: missing question", "give exactly one of expected_answer and expected_keywords",
                    "image 'images/none.jpg' not found"):
        assert message in proc.stderr, proc.stderr
    assert not (tmp_path / "runs").exists()  # stopped before a run was made, let alone trained


def test_visual_tokens_sum_over_a_rows_pages_at_their_upright_size(tmp_path):
    """A two-page row costs both pages; an EXIF-rotated photo is counted as the trainer sees it (upright)."""
    root, recipe = dataset(tmp_path, [line(None, images=["images/p.jpg", "images/wide.jpg"]), line("images/photo.jpg"),
                                      line(None, conversations=[Q, A])], sizes={"wide.jpg": (1100, 850)})
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: 1100 wide, 850 high; shown upright: 850 x 1100
    Image.new("RGB", (1100, 850), "white").save(root / "images" / "photo.jpg", exif=exif)
    rows, _ = read_pipeline(recipe.data.train)
    scan = scan_dataset(rows, [], root, recipe)
    by_line = {r.line: r for r in scan.rows}
    cap = recipe.images
    page = visual_tokens(850, 1100, cap.min_pixels, cap.max_pixels)
    assert by_line[1].sizes == ((850, 1100), (1100, 850))
    assert by_line[1].visual_tokens == page + visual_tokens(1100, 850, cap.min_pixels, cap.max_pixels)
    assert by_line[2].sizes == ((850, 1100),) and by_line[2].visual_tokens == page
    assert by_line[3].images == () and by_line[3].visual_tokens == 0
    # Each page's <|vision_start|> and <|vision_end|> are text tokens of its row.
    assert by_line[1].text_tokens - by_line[2].text_tokens == 2
    assert by_line[2].text_tokens - by_line[3].text_tokens == 2
    assert scan.formats["images/photo.jpg"].rotated and scan.formats["images/photo.jpg"].needs_copy
    assert scan.max_images_per_row == 2


def test_check_and_plan_apply_long_rows_drop_and_refuse_an_empty_run(tmp_path):
    rows = [line(conversations=[{"role": "user", "content": f"Question {i} " + "word " * (400 if i < 3 else 1)}, A]) for i in range(5)]
    root, _ = dataset(tmp_path, rows)
    recipe_path = tmp_path / "r.yaml"

    def write(seq: int) -> None:
        recipe_path.write_text(f"name: drop\ncompute: {{gpu: cpu}}\ntrain: {{sequence_len: {seq}}}\n"
                               f"data: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}, long_rows: drop}}\n")

    write(1400)  # the three long rows (~1,240 visual + ~550 text tokens) are dropped, two of five stay: most of the split
    check = run_cli("check", str(recipe_path), "--out", str(tmp_path / "pf"))
    report = json.loads((tmp_path / "pf" / "check.json").read_text())
    assert check.returncode == 1 and report["counts"]["kept_train_rows"] == 2 and report["counts"]["dropped_long_rows"] == 3
    assert "data.long_rows: drop leaves 2 of 5 train rows" in check.stdout
    plan = run_cli("plan", str(recipe_path))
    assert plan.returncode == 1 and "no run to price: 2 training rows would train" in plan.stdout and "$" not in plan.stdout
    assert "Traceback" not in plan.stderr + check.stderr

    write(4096)  # nothing is over the limit: the plan prices all five rows
    plan = run_cli("plan", str(recipe_path))
    assert plan.returncode == 0, plan.stdout + plan.stderr


def test_resize_writes_rotated_photos_upright_and_16_bit_pages_unclipped(tmp_path):
    """`vlm3 resize` uses the one normalisation: what it writes is what the trainer and the harness see."""
    root, _ = dataset(tmp_path, [line("images/photo.jpg"), line("images/deep.png"), line(None, images=["images/p.jpg", "images/q.jpg"])])
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo stored sideways: 1100 wide, 850 high
    sideways = Image.new("RGB", (1100, 850), "white")
    sideways.paste((0, 0, 0), (0, 0, 60, 850))  # the page's header bar, along the stored image's left edge
    sideways.save(root / "images" / "photo.jpg", exif=exif, quality=95)
    deep = Image.new("I;16", (850, 1100), 60000)
    deep.paste(Image.new("I;16", (850, 80), 8000), (0, 0))  # a dark header bar on a light 16-bit page
    deep.save(root / "images" / "deep.png")
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"name: t\ndata: {{train: {root}/vlm_train.jsonl, val: {root}/vlm_val.jsonl, images_root: {root}}}\n")
    out = tmp_path / "resized"
    proc = run_cli("resize", str(recipe_file), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "2 page(s) (rotated, 16-bit" in proc.stdout
    with Image.open(out / "images" / "photo.jpg") as img:
        assert img.size[0] < img.size[1] and not img.getexif().get(0x0112)  # upright, and no tag left to turn it again
        top = img.convert("L").crop((0, 0, img.width, 20))
        assert max(top.getextrema()) < 60  # the header bar is at the top, as on the page
    with Image.open(out / "images" / "deep.png") as img:
        grey = img.convert("L")
        assert grey.getpixel((10, 10)) == round(8000 / 257) and grey.getpixel((10, 500)) == round(60000 / 257)
    with Image.open(out / "images" / "q.jpg") as img:  # the second page of a two-page row is resized too
        assert img.size == tuple(reversed(resized_size(1100, 850, 56 * 56, 1280 * 28 * 28)))
