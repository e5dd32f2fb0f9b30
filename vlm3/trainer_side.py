"""Checks that need torch, transformers or Axolotl; run inside the trainer environment.

Usage (the light CLI calls these through the trainer environment's python):
    python -m vlm3.trainer_side validate-config RUN/axolotl.yaml --gpu H100 --gpu-count 1
    python -m vlm3.trainer_side verify-merge RUN

Each prints one JSON object on its last line of stdout; the caller reads that, so
Axolotl's own log chatter on stdout does not matter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# Compute capability of each GPU this project renders for: Axolotl checks bf16/tf32/flash-attention against it.
GPU_CAPABILITY = {"H100": "sm_90", "H200": "sm_90", "B200": "sm_100", "A100-80GB": "sm_80", "A100-40GB": "sm_80",
                  "L40S": "sm_89", "L4": "sm_89", "A10G": "sm_86", "T4": "sm_75"}
LOGITS_ATOL = 1e-4  # merged and base+adapter logits agree to float32 rounding


def emit(result: dict) -> int:
    print(json.dumps(result))
    return 0 if result.get("ok") else 1


def validate_config(config_path: Path, gpu: str, gpu_count: int) -> dict:
    """Axolotl's own schema over the rendered config, for the GPU it will run on."""
    import yaml
    from axolotl.utils.config import validate_config as axolotl_validate
    from axolotl.utils.dict import DictDefault
    from pydantic import ValidationError

    cfg = DictDefault(yaml.safe_load(config_path.read_text(encoding="utf-8")))
    on_gpu = gpu != "cpu"
    capabilities = {
        "bf16": on_gpu and gpu != "T4",
        "fp8": gpu in ("H100", "H200", "B200"),
        "tf32": on_gpu and gpu != "T4",
        "n_gpu": max(gpu_count, 1),
        "compute_capability": GPU_CAPABILITY.get(gpu),
    }
    import torch

    env_capabilities = {"torch_version": torch.__version__.split("+", maxsplit=1)[0]}
    try:
        axolotl_validate(cfg, capabilities=capabilities, env_capabilities=env_capabilities)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        return {"ok": False, "errors": errors}
    except (ValueError, TypeError) as exc:
        return {"ok": False, "errors": [{"field": "", "message": str(exc)}]}
    return {"ok": True, "errors": []}


def first_example(run: Path) -> tuple[str, str]:
    """An image path and question from the run's converted data, for the logits check."""
    for name in ("val.jsonl", "train.jsonl"):
        path = run / "data" / name
        if path.exists() and path.stat().st_size:
            row = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
            user = next(m for m in row["messages"] if m["role"] == "user")
            image = next(c["path"] for c in user["content"] if c["type"] == "image")
            text = next(c["text"] for c in user["content"] if c["type"] == "text")
            return image, text
    raise FileNotFoundError(f"no converted data under {run / 'data'}")


def model_inputs(processor, image_path: str, question: str):
    from PIL import Image

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    with Image.open(image_path) as img:
        return processor(text=[prompt], images=[img.convert("RGB")], return_tensors="pt")


def verify_merge(run: Path) -> dict:
    """The merged folder is what vLLM and transformers need, and computes what base+adapter computes."""
    import torch
    import yaml
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))
    config = yaml.safe_load((run / "axolotl.yaml").read_text(encoding="utf-8"))
    merged = run / "output" / "merged"
    problems: list[str] = []

    model_config = json.loads((merged / "config.json").read_text()) if (merged / "config.json").exists() else {}
    if model_config.get("architectures") != ["Qwen2VLForConditionalGeneration"]:
        problems.append(f"config.json architectures is {model_config.get('architectures')}, vLLM needs ['Qwen2VLForConditionalGeneration']")
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "processor_config.json"):
        if not (merged / name).exists():
            problems.append(f"{name} is missing from the merged folder")
    if problems:
        return {"ok": False, "problems": problems}

    processor = AutoProcessor.from_pretrained(merged)
    size = processor.image_processor.size
    limits = {"min_pixels": size.get("shortest_edge"), "max_pixels": size.get("longest_edge")}
    wanted = {k: recipe["images"][k] for k in ("min_pixels", "max_pixels")}
    if limits != wanted:
        problems.append(f"processor pixel limits {limits} differ from the recipe's {wanted}")

    image, question = first_example(run)
    inputs = model_inputs(processor, image, question)
    with torch.no_grad():
        merged_model = AutoModelForImageTextToText.from_pretrained(merged, dtype=torch.float32).eval()
        merged_logits = merged_model(**inputs).logits
        del merged_model
        result: dict = {"architectures": model_config["architectures"], "pixel_limits": limits}
        if config.get("adapter"):
            base_path = config["base_model"]
            base = AutoModelForImageTextToText.from_pretrained(base_path, dtype=torch.float32)
            base_logits = base(**inputs).logits
            adapted = PeftModel.from_pretrained(base, run / "output").eval()
            adapter_logits = adapted(**inputs).logits
            diff = (merged_logits - adapter_logits).abs().max().item()
            moved = (adapter_logits - base_logits).abs().max().item()
            result.update(max_abs_diff=diff, adapter_effect=moved)
            if diff > LOGITS_ATOL:
                problems.append(f"merged logits differ from base+adapter by {diff:.2e} (> {LOGITS_ATOL}): the merge dropped trained weights")
            if moved == 0.0:
                problems.append("the adapter does not change the base model's logits: nothing was trained")
    result.update(ok=not problems, problems=problems)
    return result


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("validate-config")
    check.add_argument("config", type=Path)
    check.add_argument("--gpu", default="cpu")
    check.add_argument("--gpu-count", type=int, default=1)
    verify = sub.add_parser("verify-merge")
    verify.add_argument("run", type=Path)
    args = parser.parse_args(argv)
    if args.command == "validate-config":
        return emit(validate_config(args.config, args.gpu, args.gpu_count))
    return emit(verify_merge(args.run))


if __name__ == "__main__":
    sys.exit(main())
