"""The harness's error for the user: an evaluation that cannot be generated, scored or judged as asked.

Usage:
    from harness.errors import EvalError
    raise EvalError(f"{eval_dir} has no scores.jsonl; run `vlm3 score {eval_dir}` first")

Its own module so that evaluation and the judge (which raises a subclass) need not import each other.
"""


class EvalError(Exception):
    """An evaluation directory that cannot be scored as asked; str() is the whole message for the user."""
