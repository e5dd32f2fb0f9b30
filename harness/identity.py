"""What tells one evaluation from another: the run, its recipe, base model and family, the data version, the weights served.

Usage:
    from harness.identity import identity_title
    identity_title({"recipe": "tiny-cpu-demo", "run": "20261205T190850Z", "family": "Qwen2-VL",
                    "data_version": "8e15ab3dfe", "served": "checkpoint-100"})
    # 'tiny-cpu-demo · run 20261205T190850Z · Qwen2-VL · data 8e15ab3dfe · checkpoint-100'

The identity is plain data: `vlm3 eval` builds it (vlm3.cli.evaluate.evaluation_identity) and hands it to
harness.evaluation.generate_into, which keeps it in meta.json; scoring copies it into summary.json and
titles report.html by it; `vlm3 compare` titles each side by it. Its keys: run (the run folder's name),
recipe, base_model, family, data_version (data_report.json's hash of the converted data), served
("finetuned", "base", "checkpoint-N", or "endpoint" with endpoint and model); a part not known is None.
"""

from __future__ import annotations

from typing import Any

IDENTITY_KEYS = ("run", "recipe", "base_model", "family", "data_version", "served", "endpoint", "model")


def identity_parts(identity: dict[str, Any] | None) -> list[str]:
    """The title's parts, in order: recipe, run, family, data version, the weights served; unknown ones left out."""
    identity = identity if isinstance(identity, dict) else {}
    served = identity.get("served")
    if served == "endpoint" and (identity.get("endpoint") or identity.get("model")):
        model = f" ({identity['model']})" if identity.get("model") else ""
        served = f"endpoint {identity.get('endpoint') or '-'}{model}"
    parts = [identity.get("recipe"), f"run {identity['run']}" if identity.get("run") else None, identity.get("family"),
             f"data {identity['data_version']}" if identity.get("data_version") else None, served]
    return [str(p) for p in parts if p]


def identity_title(identity: dict[str, Any] | None) -> str:
    """'tiny-cpu-demo · run 20261205T190850Z · Qwen2-VL · data 8e15ab3dfe · checkpoint-100' ('' when nothing is known)."""
    return " · ".join(identity_parts(identity))


def distinguishing_parts(a: dict[str, Any] | None, b: dict[str, Any] | None) -> tuple[str, str]:
    """Each side's title parts that the other side's title lacks: the short name of what differs ('' when nothing does)."""
    parts_a, parts_b = identity_parts(a), identity_parts(b)
    return (" · ".join(p for p in parts_a if p not in parts_b), " · ".join(p for p in parts_b if p not in parts_a))
