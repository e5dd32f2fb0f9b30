"""A resumed training keeps the losses logged before its checkpoint (train_metrics.json)."""

from vlm3.train.trainer_env import TrainingLog, resumed_history


def _log(lines: list[str]) -> dict:
    log = TrainingLog()
    for line in lines:
        log.feed(line + "\n")
    return log.to_dict()


def test_a_resume_keeps_the_losses_before_its_checkpoint_and_drops_the_replayed_ones():
    # The first attempt logged epochs 0.1-0.5 and was killed; the checkpoint was at epoch 0.3, so the resume
    # logs again from 0.4: the history is 0.1, 0.2, 0.3 from the first attempt and 0.4 onwards from the second.
    first = _log([f"{{'loss': {4 - i}.0, 'grad_norm': 1.0, 'learning_rate': 0.0001, 'epoch': 0.{i}}}" for i in range(1, 6)])
    second = _log([f"{{'loss': {3 - i / 10:.1f}, 'learning_rate': 0.0001, 'epoch': 0.{i}}}" for i in range(4, 8)]
                  + ["{'eval_loss': 2.5, 'epoch': 0.7}"])
    merged = resumed_history(first, second)
    assert merged["loss_epochs"] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert merged["losses"] == [3.0, 2.0, 1.0, 2.6, 2.5, 2.4, 2.3]
    assert merged["first_loss"] == 3.0 and merged["final_loss"] == 2.3
    assert merged["eval_losses"] == [2.5]


def test_a_file_without_epochs_keeps_only_the_new_attempt():
    old = {"losses": [5.0, 4.0], "eval_losses": []}  # written before epochs were recorded
    new = _log(["{'loss': 3.0, 'epoch': 0.5}"])
    assert resumed_history(old, new)["losses"] == [3.0]
