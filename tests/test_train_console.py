"""The console view of local training: what Axolotl 0.19 and the HF Trainer print, read into one status line.

Usage:
    .venv/bin/python -m pytest tests/test_train_console.py -q

RECORDED is a stretch of a real logs/train.log of the tiny demo (recipes/tiny_cpu_demo.yaml), bytes as
written: tqdm redraws its bar after a carriage return, Axolotl prints the Trainer's metrics as a dict
of strings, and the eval bar (0/5) is drawn inside the training bar's line.
"""

from __future__ import annotations

import pytest

from vlm3.train.trainer_env import TrainingLog, format_seconds

RECORDED = (
    "[2026-12-05 19:09:07,355] [INFO] [axolotl.train] Starting trainer...\n"
    "  0%|          | 0/465 [00:00<?, ?it/s][2026-12-05 19:09:07,665] [INFO] [axolotl.core.trainers.base] Running evaluation step...\n"
    "\n  0%|          | 0/5 [00:00<?, ?it/s]\x1b[A\n"
    "{'eval_loss': '7.007', 'eval_runtime': '0.1743', 'eval_samples_per_second': '114.7', 'eval_ppl': '1105', "
    "'memory/max_active (GiB)': '0', 'epoch': 0}\n"
    "\r  0%|          | 0/465 [00:00<?, ?it/s]\n\r100%|██████████| 5/5 [00:00<00:00, 52.43it/s]\x1b[A\n"
    "\r  0%|          | 1/465 [00:00<01:53,  4.08it/s]\r  1%|          | 4/465 [00:00<00:37, 12.39it/s]"
    "\r  2%|▏         | 10/465 [00:00<00:23, 19.63it/s]"
    "{'loss': '6.617', 'grad_norm': '1.737', 'learning_rate': '0.002077', 'ppl': '747.8', 'memory/max_active (GiB)': '0', "
    "'tokens/trainable': 737, 'tokens/total': 2884, 'epoch': '0.625'}\n"
    "\r  2%|▏         | 10/465 [00:00<00:23, 19.63it/s]\r  4%|▍         | 20/465 [00:01<00:19, 22.43it/s]"
    "{'loss': '4.911', 'grad_norm': '2.652', 'learning_rate': '0.002999', 'ppl': '135.7', 'memory/max_active (GiB)': '0', "
    "'tokens/train_per_sec_per_gpu': '1674', 'tokens/trainable': 1440, 'tokens/total': 5720, 'epoch': '1.25'}\n"
    "\r 22%|██▏       | 100/465 [00:05<00:20, 17.54it/s]"
    "{'loss': '1.111', 'grad_norm': '1.384', 'learning_rate': '0.00274', 'ppl': '3.037', 'memory/max_active (GiB)': '0', "
    "'tokens/train_per_sec_per_gpu': '1319', 'tokens/trainable': 7051, 'tokens/total': 28304, 'epoch': '6.25'}\n"
    "\r 22%|██▏       | 100/465 [00:05<00:20, 17.54it/s][2026-12-05 19:09:12,890] [INFO] [axolotl.core.trainers.base] Running evaluation step...\n"
    "\n  0%|          | 0/5 [00:00<?, ?it/s]\x1b[A\n\r 80%|████████  | 4/5 [00:00<00:00, 37.67it/s]\x1b[A"
    "{'eval_loss': '3.808', 'eval_runtime': '0.1886', 'eval_samples_per_second': '106', 'eval_ppl': '45.05', "
    "'memory/max_active (GiB)': '0', 'epoch': '6.25'}\n"
    "\r 22%|██▏       | 100/465 [00:05<00:20, 17.54it/s]\n"
)
EXPECTED = "step 100/465 (22%) · loss 1.111 · eval loss 3.808 · lr 0.00274 · 1,319 tok/s · ETA 0:20"


def test_a_recorded_log_reads_as_one_status_line():
    log = TrainingLog()
    log.feed(RECORDED)
    assert log.status_line() == EXPECTED
    assert log.losses == [6.617, 4.911, 1.111] and log.eval_losses == [7.007, 3.808]
    assert log.learning_rates == [0.002077, 0.002999, 0.00274] and log.grad_norms == [1.737, 2.652, 1.384]
    # The eval bar (5 batches) never replaces the training bar's step count.
    assert (log.step, log.total_steps, log.elapsed_seconds, log.remaining_seconds) == (100, 465, 5, 20)
    assert log.status_line(devices=4).endswith("1,319 tok/s per GPU · ETA 0:20")


@pytest.mark.parametrize("size", [1, 7, 64, 333])
def test_the_same_log_in_any_chunking_reads_the_same(size):
    """The pipe hands over whatever bytes are ready: a metrics dict cut in two is still read, once."""
    log = TrainingLog()
    for start in range(0, len(RECORDED), size):
        log.feed(RECORDED[start:start + size])
    assert log.status_line() == EXPECTED
    assert log.losses == [6.617, 4.911, 1.111] and log.eval_losses == [7.007, 3.808]


def test_before_the_first_step_and_after_the_last():
    log = TrainingLog()
    assert log.status_line() == "starting"
    log.feed("  0%|          | 0/31 [00:00<?, ?it/s]")
    assert log.status_line() == "step 0/31 (0%)"  # no estimate yet: tqdm prints '?'
    log.feed("\r100%|██████████| 31/31 [01:02<00:00,  2.01s/it]\n{'loss': 0.5, 'learning_rate': 0.0, 'epoch': 1.0}\n")
    assert log.status_line() == "step 31/31 (100%) · loss 0.5 · lr 0 · 1:02 elapsed"


@pytest.mark.parametrize("seconds,text", [(0, "0:00"), (19, "0:19"), (725, "12:05"), (3727, "1:02:07")])
def test_durations_read_like_tqdms_clock(seconds, text):
    assert format_seconds(seconds) == text


def synthetic_run(steps: int, logging_steps: int, eval_steps: int) -> list[str]:
    """Chunks as the Trainer prints them: a bar after each step, a metrics dict every logging_steps, an eval every eval_steps."""
    chunks = []
    for step in range(1, steps + 1):
        chunks.append(f"\r{step * 100 // steps:3d}%|#         | {step}/{steps} [00:{step // 10:02d}<00:{(steps - step) // 10:02d}, 10.0it/s]")
        if step % logging_steps == 0:
            chunks.append(f"{{'loss': '{5 / step:.4g}', 'grad_norm': '1.0', 'learning_rate': '0.0002', "
                          f"'tokens/train_per_sec_per_gpu': '1534', 'epoch': '{step / steps:.3g}'}}\n")
        if step % eval_steps == 0:
            chunks.append(f"{{'eval_loss': '{6 / step:.4g}', 'eval_runtime': '0.2', 'epoch': '{step / steps:.3g}'}}\n")
    return chunks


def test_without_a_terminal_a_plain_line_is_printed_every_few_steps_and_at_each_eval(capsys):
    from vlm3.cli.train import PLAIN_PROGRESS_LINES, plain_progress

    show = plain_progress(TrainingLog())
    for chunk in synthetic_run(steps=400, logging_steps=5, eval_steps=100):
        show(chunk)
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith("training: step ") for line in lines), lines
    steps = [int(line.split()[2].split("/")[0]) for line in lines]
    # 80 losses logged: about one line in 20 steps (400 / PLAIN_PROGRESS_LINES), plus one at each of 4 evals.
    assert PLAIN_PROGRESS_LINES <= len(lines) <= PLAIN_PROGRESS_LINES + 4, lines
    assert steps == sorted(steps) and steps[-1] == 400
    assert lines[0] == "training: step 5/400 (1%) · loss 1 · lr 0.0002 · 1,534 tok/s · ETA 0:39"
    assert "training: step 100/400 (25%) · loss 0.05 · eval loss 0.06 · lr 0.0002 · 1,534 tok/s · ETA 0:30" in lines


def test_a_short_run_prints_every_logged_loss(capsys):
    from vlm3.cli.train import plain_progress

    show = plain_progress(TrainingLog())
    for chunk in synthetic_run(steps=30, logging_steps=10, eval_steps=1000):
        show(chunk)
    assert [line.split(" · ")[0] for line in capsys.readouterr().out.splitlines()] == [
        "training: step 10/30 (33%)", "training: step 20/30 (67%)", "training: step 30/30 (100%)"]


def test_the_modal_logs_get_the_same_status_line_and_it_is_read_back_from_them():
    """The Modal train function emits status_printer's lines into the Modal logs (streamed to `vlm3 modal train`,
    or `modal app logs`); latest_status reads the newest back from the log text, among the logs' other lines."""
    from vlm3.train.trainer_env import latest_status, status_printer

    emitted: list[str] = []
    show = status_printer(TrainingLog(), emitted.append)
    for start in range(0, len(RECORDED), 64):
        show(RECORDED[start:start + 64])
    assert emitted and all(line.startswith("training: step ") for line in emitted), emitted
    assert emitted[-1] == f"training: {EXPECTED}"
    assert not any("{'loss'" in line or "it/s" in line for line in emitted), "Axolotl's raw output stays in train.log"
    modal_logs = "\n".join(["Building image im-123", "training tiny-cpu-demo/20261205T190850Z: a status line every few steps here",
                            *emitted, "volume commit: checkpoint-100"])
    assert latest_status(modal_logs) == EXPECTED
    assert latest_status(RECORDED) is None, "raw trainer output has no status line"
    assert latest_status("") is None
