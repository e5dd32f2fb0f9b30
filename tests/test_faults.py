"""Faults a hostile environment throws at vlm3, each scripted against real loopback servers and files.

Usage:
    .venv/bin/python -m pytest tests/test_faults.py -q -p no:asyncio

Endpoint swaps, failed requests of every kind, null content, trickled bodies, echoed keys and
escape codes, alias bombs, decompression bombs, deep nesting, devices and symlinks as images,
two writers at once, and a child server that must die with its parent.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from bench.loopback_openai import LoopbackOpenAI, Reply
from vlm3.core.jsonio import FolderBusy, folder_lock, write_json
from harness.evaluation import generate_into, score_eval_dir
from harness.generate import GenerationSettings
from data_adapters.samples import EvalSample
from tests.conftest import DEMO_RECIPE, ROOT, run_cli

SECRET = "sk-faults-0123456789abcdef"
MODEL = "tiny-vlm"


def write_jpeg(path: Path, color=(200, 200, 200)) -> Path:
    Image.new("RGB", (32, 24), color).save(path, format="JPEG")
    return path


def probe_samples(tmp_path: Path, count: int) -> list[EvalSample]:
    """Probes whose reference states a torque: a spec check decides each one."""
    samples = []
    for i in range(count):
        image = write_jpeg(tmp_path / f"p{i:02d}.jpg", (i * 7 % 255, 90, 120))
        samples.append(EvalSample(id=f"probe:{i:02d}", kind="probe", image=str(image), image_ref=image.name,
                                  question=f"torque {i:02d}?", expected="45 Nm"))
    return samples


def settings_for(server: LoopbackOpenAI, **overrides) -> GenerationSettings:
    base = GenerationSettings(base_url=server.base_url, api_key=SECRET, model=MODEL, timeout_s=2, max_retries=1, concurrency=4)
    return replace(base, **overrides)


def right_answer(body: dict) -> str:
    return "Tighten to 45 Nm."


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# Must 1: an answer belongs to the endpoint and model that gave it


def test_a_second_endpoint_with_the_same_model_name_reuses_nothing(tmp_path):
    samples = probe_samples(tmp_path, 4)
    eval_dir = tmp_path / "eval"
    with LoopbackOpenAI(answer=right_answer) as a:
        first = generate_into(eval_dir, samples, settings_for(a), label="x", endpoint=a.base_url)
    with LoopbackOpenAI(answer=lambda body: "no idea") as b:
        second = generate_into(eval_dir, samples, settings_for(b), label="x", endpoint=b.base_url)
        assert b.request_count == 4  # every sample asked of B
    assert (first.answered, second.skipped, second.answered, second.foreign) == (4, 0, 4, 4)
    summary = score_eval_dir(eval_dir, judge=False)
    assert summary["endpoint"] == b.base_url and summary["metrics"]["pass_rate"] == 0.0  # B's answers, not A's
    assert summary["counts"]["foreign_answers"] == 0  # B answered all: nothing of A's stands in for B
    assert len(lines(eval_dir / "predictions.jsonl")) == 8  # A's answers kept


def test_answers_from_other_weights_behind_the_same_url_are_not_reused(tmp_path):
    samples = probe_samples(tmp_path, 3)
    with LoopbackOpenAI(answer=right_answer) as server:
        settings = settings_for(server, endpoint_id="local:/models/merged")
        generate_into(tmp_path / "e", samples, replace(settings, weights_id="weights:aaa"), label="x", endpoint="local")
        again = generate_into(tmp_path / "e", samples, replace(settings, weights_id="weights:aaa"), label="x", endpoint="local")
        assert (again.skipped, again.requested) == (3, 0)
        other = generate_into(tmp_path / "e", samples, replace(settings, weights_id="weights:bbb"), label="x", endpoint="local")
    assert (other.skipped, other.answered, other.foreign) == (0, 3, 3)


def test_a_saved_answer_from_another_served_model_is_asked_again(tmp_path):
    samples = probe_samples(tmp_path, 3)
    out = tmp_path / "e"
    settings_kw = {"endpoint_id": "https://same.example/v1"}
    with LoopbackOpenAI(default=Reply(served_model="model-v1")) as server:
        generate_into(out, samples[:2], settings_for(server, **settings_kw), label="x", endpoint="e")
    with LoopbackOpenAI(default=Reply(served_model="model-v2")) as server:
        stats = generate_into(out, samples, settings_for(server, **settings_kw), label="x", endpoint="e")
        assert server.request_count == 3  # the new sample first, alone; then both stale answers again
    assert (stats.skipped, stats.reasked, stats.answered) == (0, 2, 3)


def test_default_folders_differ_per_endpoint():
    from vlm3.cli.evaluate import eval_dir_for
    from vlm3.recipe.schema import load_recipe

    recipe = load_recipe(DEMO_RECIPE)

    def folder(url: str) -> Path:
        return eval_dir_for(argparse.Namespace(out=None, endpoint=url), recipe, None, "endpoint")

    a, b = folder("https://a--serve.modal.run/v1"), folder("https://b--serve.modal.run/v1")
    assert a != b and a.parent.parent == b.parent.parent == Path("evals") / recipe.name
    assert folder("https://a--serve.modal.run/v1/") == a  # a trailing slash is the same endpoint
    assert "a--serve.modal.run" in a.parent.name


# Must 2: failed is not wrong


FAILURES = {
    "500-after-retries": [Reply.error(500)] * 2,
    "429-after-retries": [Reply.error(429)] * 2,
    "html-error-page": [Reply(status=502, raw="<html><body><h1>502 Bad Gateway</h1></body></html>", content_type="text/html")] * 2,
    "html-with-200": [Reply(raw="<html>maintenance</html>", content_type="text/html")],
    "empty-choices": [Reply(raw=json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": MODEL, "choices": []}))],
    "null-content": [Reply(null_content=True)],
}


@pytest.mark.parametrize("script", FAILURES.values(), ids=FAILURES.keys())
def test_each_failure_is_an_error_with_the_servers_message_and_never_a_wrong_answer(tmp_path, script):
    samples = probe_samples(tmp_path, 5)
    eval_dir = tmp_path / "eval"
    # The scripted fault hits probe 02 only; the other four answer right.
    with LoopbackOpenAI([replace(r, match="torque 02") for r in script], answer=right_answer) as server:
        stats = generate_into(eval_dir, samples, settings_for(server), label="x", endpoint=server.base_url, probe_threshold=0.9)
    assert (stats.answered, stats.failed) == (4, 1)
    [failed] = [r for r in lines(eval_dir / "predictions.jsonl") if r["error"]]
    assert failed["id"] == "probe:02" and failed["answer"] is None and failed["error"]
    summary = score_eval_dir(eval_dir, judge=False)
    # 4 of 4 answered probes are right: the failure is counted apart, not as a fifth wrong answer.
    assert summary["probes"]["pass_rate"] == 1.0 and summary["probes"]["passed"] is True
    assert summary["counts"]["failed"] == 1 and summary["counts"]["errors"] == 1 and summary["complete"] is False
    report = (eval_dir / "report.html").read_text(encoding="utf-8")
    assert "no prediction" not in report and "failed after retries" in report


def test_the_servers_error_text_is_shown(tmp_path):
    samples = probe_samples(tmp_path, 1)
    with LoopbackOpenAI([Reply(status=502, raw="<h1>upstream exploded</h1>", content_type="text/html")] * 2) as server:
        generate_into(tmp_path / "e", samples, settings_for(server), label="x", endpoint=server.base_url)
    [record] = lines(tmp_path / "e" / "predictions.jsonl")
    assert "502" in record["error"] and "upstream exploded" in record["error"]
    score_eval_dir(tmp_path / "e", judge=False)
    assert "&lt;h1&gt;upstream exploded" in (tmp_path / "e" / "report.html").read_text()  # escaped, never markup


def test_null_content_is_an_error_not_an_empty_answer(tmp_path):
    samples = probe_samples(tmp_path, 1)
    with LoopbackOpenAI(default=Reply(null_content=True)) as server:
        stats = generate_into(tmp_path / "e", samples, settings_for(server), label="x", endpoint=server.base_url)
    [record] = lines(tmp_path / "e" / "predictions.jsonl")
    assert stats.failed == 1 and record["answer"] is None and "no content" in record["error"]


def test_cli_eval_exits_non_zero_while_failures_remain_and_zero_once_answered(tmp_path):
    out = tmp_path / "e"
    env = {"VLM3_API_KEY": SECRET}
    with LoopbackOpenAI([Reply.error(500, match="intake valve clearance")] * 6) as server:  # eval.max_retries 5
        bad = run_cli("eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--only", "probes", "--out", str(out),
                      "--model", "m", env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["failed"] >= 1 and "Traceback" not in bad.stderr
    assert run_cli("score", str(out), "--no-judge").returncode == 1  # still incomplete


# Must 4 and 6: bounded, clean server text


def test_a_trickled_body_is_cut_at_the_deadline(tmp_path):
    samples = probe_samples(tmp_path, 1)
    with LoopbackOpenAI(default=Reply(trickle_s=0.5)) as server:
        started = time.monotonic()
        stats = generate_into(tmp_path / "e", samples, settings_for(server, timeout_s=1.0, max_retries=0),
                              label="x", endpoint=server.base_url)
        elapsed = time.monotonic() - started
    # A ~250-byte body at 2 bytes/s would take ~2 minutes; every read arrives well within the 1 s timeout.
    assert stats.failed == 1 and elapsed < 5, elapsed
    error = lines(tmp_path / "e" / "predictions.jsonl")[0]["error"]
    assert "no complete answer within" in error or "timed out" in error.lower(), error


def test_each_attempt_of_a_trickled_body_is_cut_at_the_timeout(tmp_path):
    """The timeout bounds a whole attempt, not each read: every retry gets its own 1 s, then the sample fails."""
    samples = probe_samples(tmp_path, 1)
    with LoopbackOpenAI(default=Reply(trickle_s=0.5)) as server:
        settings = settings_for(server, timeout_s=1.0, max_retries=2)
        started = time.monotonic()
        stats = generate_into(tmp_path / "e", samples, settings, label="x", endpoint=server.base_url)
        elapsed = time.monotonic() - started
        asked = len(server.requests)
    # Three attempts of ~1 s each plus the client's backoff, well inside the whole-request deadline.
    assert stats.failed == 1 and asked == 3, (asked, elapsed)
    assert elapsed < settings.request_deadline_s, (elapsed, settings.request_deadline_s)


def test_an_echoed_key_and_escape_codes_never_reach_a_file_or_the_terminal(tmp_path):
    out = tmp_path / "e"
    with LoopbackOpenAI(default=replace(Reply.error(401), echo_key=True)) as server:
        proc = run_cli("eval", str(DEMO_RECIPE), "--endpoint", server.base_url, "--only", "probes", "--out", str(out),
                       "--model", "m", env={"VLM3_API_KEY": SECRET})
    assert proc.returncode == 1
    # Every file vlm3 wrote as text (the page images it draws for its general probes are PNGs, bytes not text).
    written = [p.read_text(errors="replace") for p in out.rglob("*") if p.is_file() and p.suffix not in (".png", ".jpg", ".sqlite")]
    for text in (proc.stdout, proc.stderr, *written):
        assert SECRET not in text and "\x1b" not in text and "\x07" not in text
    record = lines(out / "predictions.jsonl")[0]
    assert "[redacted]" in record["error"] and "denied" in record["error"]


def test_an_answer_echoing_the_key_is_redacted(tmp_path):
    samples = probe_samples(tmp_path, 1)
    with LoopbackOpenAI(answer=lambda body: f"your key is {SECRET}") as server:
        generate_into(tmp_path / "e", samples, settings_for(server), label="x", endpoint=server.base_url)
    assert SECRET not in (tmp_path / "e" / "predictions.jsonl").read_text()


ALIAS_BOMB = """name: bomb
axolotl:
  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize("text, message", [
    (ALIAS_BOMB, "expands to more than"),
    ("a: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested more than"),
    ("name: x\nnotes: |\n" + "  words words words words\n" * 50_000, "over the 1,000,000-byte limit"),
], ids=["alias-bomb", "deep-nesting", "huge-file"])
def test_hostile_recipes_are_refused_before_expansion(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    started = time.monotonic()
    for verb in ("validate", "check", "plan", "prepare"):
        proc = run_cli(verb, str(path), "--runs-root", str(tmp_path / "runs")) if verb == "prepare" else run_cli(verb, str(path))
        assert proc.returncode == 2, (verb, proc.stdout, proc.stderr)
        assert message in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_a_few_honest_aliases_still_load(tmp_path):
    from vlm3.recipe.schema import load_recipe

    text = DEMO_RECIPE.read_text() + "\naxolotl:\n  extra_a: &x {warmup_steps: 1}\n  extra_b: *x\n"
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    assert load_recipe(path).axolotl["extra_b"] == {"warmup_steps": 1}


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims width x height (a decompression bomb's header) with one tiny IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    return path


def test_image_faults_are_named_errors(tmp_path):
    from data_adapters.checks import inspect_image

    root = tmp_path / "images"
    root.mkdir()
    png_header_only(root / "bomb.png", 20_000, 20_000)
    write_jpeg(tmp_path / "outside.jpg")
    (root / "out.jpg").symlink_to(tmp_path / "outside.jpg")
    (root / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo.jpg")
    (root / "inner").mkdir()
    write_jpeg(root / "inner" / "real.jpg")
    (root / "alias.jpg").symlink_to(root / "inner" / "real.jpg")  # a symlink that stays inside is fine
    cases = {"bomb.png": "image_too_large", "out.jpg": "image_outside_root", "zero.jpg": "image_outside_root",
             "fifo.jpg": "image_not_file", "/dev/zero": "image_outside_root", "alias.jpg": None}
    for image, code in cases.items():
        info = inspect_image(root, image, decode=True)
        assert (info.code if info.problem else None) == code, (image, info)


def test_probes_are_checked_like_training_images(tmp_path):
    from data_adapters.samples import load_probes

    root = tmp_path / "images"
    root.mkdir()
    write_jpeg(tmp_path / "secret.jpg")
    (root / "leak.jpg").symlink_to(tmp_path / "secret.jpg")
    png_header_only(root / "bomb.png", 20_000, 20_000)
    probes = tmp_path / "probes.jsonl"
    probes.write_text("".join(json.dumps({"id": f"p{i}", "image": image, "question": "q?", "expected_answer": "45 Nm"}) + "\n"
                              for i, image in enumerate(["leak.jpg", "bomb.png"])))
    samples, problems = load_probes(probes, root)
    assert samples == [] and [p.code for p in problems] == ["image_outside_root", "image_too_large"]


def test_deep_and_long_jsonl_lines_are_named_problems(tmp_path):
    from data_adapters.pipeline import MAX_LINE_BYTES, read_pipeline

    good = {"image": "p.jpg", "conversations": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    deep: object = "x"
    for _ in range(100_000):
        deep = {"k": deep}
    path = tmp_path / "d.jsonl"
    with path.open("w") as handle:
        handle.write(json.dumps(good) + "\n")
        handle.write('{"image": "p.jpg", "metadata": ' + '{"k": ' * 100_000 + '"x"' + "}" * 100_000 + "}\n")
        handle.write(json.dumps({**good, "metadata": {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}) + "\n")
        handle.write('{"image": "' + "x" * (MAX_LINE_BYTES + 10) + '"}\n')
        handle.write(json.dumps(good) + "\n")
    rows, problems = read_pipeline(path)
    assert len(rows) == 2 and [(p.line, p.code) for p in problems] == [(2, "too_deep"), (3, "too_deep"), (4, "line_too_long")]


def test_report_caps_huge_answers_and_keeps_the_full_text_in_the_data(tmp_path):
    samples = probe_samples(tmp_path, 1)
    huge = "x " * 150_000
    with LoopbackOpenAI(answer=lambda body: huge) as server:
        generate_into(tmp_path / "e", samples, settings_for(server), label="x", endpoint=server.base_url)
    score_eval_dir(tmp_path / "e", judge=False)
    assert (tmp_path / "e" / "report.html").stat().st_size < 200_000
    assert lines(tmp_path / "e" / "predictions.jsonl")[0]["answer"] == huge


# Must 5: one writer at a time


def test_a_second_writer_is_refused_with_a_clear_message(tmp_path):
    samples = probe_samples(tmp_path, 2)
    with LoopbackOpenAI() as server:
        generate_into(tmp_path / "e", samples, settings_for(server), label="x", endpoint=server.base_url)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from vlm3.core.jsonio import folder_lock\n"
                               "with folder_lock(sys.argv[1], 'scoring'):\n    print('held', flush=True); time.sleep(30)",
                               str(tmp_path / "e")], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_cli("score", str(tmp_path / "e"), "--no-judge")
        assert proc.returncode == 1 and "is being written by vlm3 pid" in proc.stderr and "Traceback" not in proc.stderr
        with pytest.raises(FolderBusy):
            with folder_lock(tmp_path / "e", "test"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder_lock(tmp_path / "e", "test"):  # released when its holder died (kill -9)
        pass


def test_two_concurrent_scores_both_finish_or_one_is_told_to_wait(tmp_path):
    samples = probe_samples(tmp_path, 6)
    with LoopbackOpenAI(answer=right_answer) as server:
        generate_into(tmp_path / "e", samples, settings_for(server), label="x", endpoint=server.base_url)
    procs = [subprocess.Popen([sys.executable, "-m", "vlm3.cli.main", "score", str(tmp_path / "e"), "--no-judge"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(120), p.stderr.read()) for p in procs]
    for code, err in results:
        assert code == 0 or (code == 1 and "is being written by" in err), err
        assert "Traceback" not in err
    assert any(code == 0 for code, _ in results)
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["counts"]["answered"] == 6
    assert not list((tmp_path / "e").glob("*.tmp"))


def test_atomic_writes_from_many_threads_never_collide(tmp_path):
    target, errors = tmp_path / "summary.json", []

    def write(n: int) -> None:
        try:
            for i in range(50):
                write_json(target, {"writer": n, "i": i, "pad": "x" * 1000})
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and json.loads(target.read_text())["i"] == 49
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_two_runs_created_in_the_same_second_get_two_folders(tmp_path):
    from vlm3.recipe.schema import load_recipe
    from vlm3.recipe.runs import RunDir

    recipe = load_recipe(DEMO_RECIPE)
    made, errors = [], []

    def create() -> None:
        try:
            made.append(RunDir.create(recipe, root=tmp_path, name="20261201T000000Z").path)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(made)) == 8
    assert all((path / "recipe.yaml").is_file() and (path / "status.json").is_file() for path in made)


def test_two_concurrent_prepares_both_succeed(tmp_path, sample_dir):
    procs = [subprocess.Popen([sys.executable, "-m", "vlm3.cli.main", "prepare", str(DEMO_RECIPE), "--runs-root", str(tmp_path)],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(300), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    runs = [p for p in (tmp_path / "tiny-cpu-demo").iterdir() if not p.is_symlink()]
    assert len(runs) == 2


# Must 6: the child server ends with vlm3; a key guards every route but /health


def test_a_child_started_like_the_server_dies_with_a_killed_parent(tmp_path):
    parent_code = (
        "import subprocess, sys, time\n"
        "from vlm3.serve.local import die_with_parent\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True, preexec_fn=die_with_parent)\n"
        "print(child.pid, flush=True); time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    child_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(child_pid, 0)
        except ProcessLookupError:
            break
        # A zombie child of a dead parent is reaped by init; /proc shows its state until then.
        status = Path(f"/proc/{child_pid}/stat")
        if status.exists() and status.read_text().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        os.kill(child_pid, signal.SIGKILL)
        pytest.fail("the child outlived its killed parent")


def test_the_key_guard_answers_401_everywhere_but_health():
    import asyncio

    import httpx

    from vlm3.serve.guard import require_key

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def statuses() -> dict:
        transport = httpx.ASGITransport(app=require_key(app, SECRET))
        async with httpx.AsyncClient(transport=transport, base_url="http://guarded") as client:
            out = {}
            for path in ("/health", "/v1/models", "/v1/chat/completions", "/metrics", "/tokenize", "/docs"):
                out[path] = (await client.get(path)).status_code
            out["keyed"] = (await client.get("/v1/models", headers={"Authorization": f"Bearer {SECRET}"})).status_code
            out["wrong"] = (await client.get("/v1/models", headers={"Authorization": "Bearer nope"})).status_code
            return out

    got = asyncio.run(statuses())
    assert got == {"/health": 200, "/v1/models": 401, "/v1/chat/completions": 401, "/metrics": 401, "/tokenize": 401,
                   "/docs": 401, "keyed": 200, "wrong": 401}


def test_the_smoke_test_probes_every_route_but_health():
    from vlm3.cloud.support import auth_probe_routes, unguarded_routes

    openapi = {"paths": {"/health": {"get": {}}, "/v1/models": {"get": {}}, "/tokenize": {"post": {}},
                         "/v1/models/{model_id}": {"get": {}, "delete": {}}, "/metrics": {"get": {}}}}
    routes = auth_probe_routes(openapi)
    assert ("GET", "/health") not in routes
    assert {("GET", "/v1/models"), ("POST", "/tokenize"), ("GET", "/v1/models/x"), ("DELETE", "/v1/models/x"),
            ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json")} <= set(routes)
    assert unguarded_routes({"GET /v1/models": 401, "POST /tokenize": 200, "GET /metrics": 404}) == ["GET /metrics", "POST /tokenize"]


def test_the_vllm_middleware_class_guards_like_the_wrapper(monkeypatch):
    import asyncio

    import httpx

    from vlm3.serve.guard import KeyGuard

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    monkeypatch.setenv("VLLM_API_KEY", SECRET)

    async def codes() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=KeyGuard(app)), base_url="http://g") as client:
            return [(await client.get("/tokenize")).status_code, (await client.get("/health")).status_code,
                    (await client.get("/tokenize", headers={"Authorization": f"Bearer {SECRET}"})).status_code]

    assert asyncio.run(codes()) == [401, 200, 200]
