"""QLoRA: how far the served (merged) model is from the one training computed, for each way of merging.

Usage:
    .venv/bin/python -m bench.bench_qlora_merge [--model .cache/tiny-qwen2-vl] [--precision bf16] [--epochs 4] [--examples 8]

Trains a real QLoRA adapter with Axolotl on a CPU (the tiny demo recipe with the QLoRA keys of
`vlm3.train.render.qlora_keys`: the language model's linear layers in NF4, the vision tower and output head in
the training dtype; no evaluation pass, which bitsandbytes' CPU layers cannot follow with training), merges
it with `vlm3.train.steps.merge_run` (adapter folded into the dequantized NF4 base), then compares logits on the
run's validation rows under teacher forcing:

- trained: the base loaded in 4-bit exactly as Axolotl loaded it, plus the adapter, through bitsandbytes'
  own 4-bit layers: what training computed;
- merged: the folder vLLM serves;
- plain merge: the adapter folded into the original (un-quantized) base, what a LoRA merge would serve.

Prints a table, then one JSON object on its last line (tests/test_qlora.py reads it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DEMO_RECIPE = ROOT / "recipes" / "tiny_cpu_demo.yaml"


def build_run(runs_root: Path, model: Path, epochs: int = 4, precision: str = "auto"):
    """A tiny QLoRA run, trained by Axolotl and merged by vlm3.train.steps, through the light environment's API."""
    from vlm3.recipe.schema import load_recipe
    from vlm3.train.render import qlora_keys
    from vlm3.train.steps import merge_run, prepare_run, train_run
    from vlm3.train.trainer_env import TrainerEnv

    raw = yaml.safe_load(DEMO_RECIPE.read_text(encoding="utf-8"))
    raw["name"] = "tiny-qlora"
    raw["model"]["base"] = str(model.resolve())
    for key in ("train", "val", "images_root", "probes"):
        raw["data"][key] = str((ROOT / raw["data"][key]).resolve())
    raw["train"]["lora"].pop("modules_to_save", None)  # QLoRA's usual shape: only the LoRA matrices are trained
    raw["train"]["epochs"] = epochs
    raw["train"]["precision"] = precision  # bf16 is the 7B recipes' regime, and runs on a CPU
    runs_root.mkdir(parents=True, exist_ok=True)
    recipe_file = runs_root / "tiny_qlora.yaml"
    recipe_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    recipe = load_recipe(recipe_file)  # a CPU recipe (the schema keeps QLoRA for GPUs); the QLoRA keys are added below

    env = TrainerEnv.locate()
    run = prepare_run(recipe, root=runs_root)
    config = yaml.safe_load(run.config_file.read_text(encoding="utf-8"))
    config.update(qlora_keys(), adapter="qlora")
    for key in ("test_datasets", "eval_steps"):
        config.pop(key, None)
    config["val_set_size"] = 0.0
    run.config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    train_run(run, env)
    return run, merge_run(run, env)


def logit_gap(reference: list, other: list) -> dict:
    """Max |difference| (absolute and relative to the largest logit) and top-1 agreement over every position."""
    import torch

    ref = torch.cat([r.flatten(0, -2).float() for r in reference])
    out = torch.cat([o.flatten(0, -2).float() for o in other])
    diff = (out - ref).abs().max().item()
    return {"max_abs_diff": diff, "relative": diff / ref.abs().max().item(), "positions": int(ref.shape[0]),
            "top1_agree": int((ref.argmax(-1) == out.argmax(-1)).sum())}


def measure(run: Path, examples: int) -> dict:
    """Trainer environment: logits of the trained model against the merged folder and a plain merge."""
    import os

    import torch
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlm3.train.trainer_side import check_examples, model_inputs, nf4_base_dir, training_quantization

    os.chdir(run)  # Axolotl's config paths are relative to the run
    cfg, quantization = training_quantization(run / "axolotl.yaml")
    processor = AutoProcessor.from_pretrained(run / "output" / "merged")
    inputs = [model_inputs(processor, images, question) for images, question in check_examples(run, limit=examples)]

    def logits(model) -> list:
        with torch.no_grad():
            return [model(**batch).logits.float() for batch in inputs]

    quantized = AutoModelForImageTextToText.from_pretrained(cfg.base_model, quantization_config=quantization,
                                                            dtype=cfg.torch_dtype, device_map="cpu")
    # train(): bitsandbytes' training path (dequantize, then matmul in the compute dtype); its CPU inference
    # path repacks the weights. Dropout is 0 in the recipe and the model.
    trained_model = PeftModel.from_pretrained(quantized, run / "output").train()
    trained = logits(trained_model)
    del trained_model, quantized
    merged = logits(AutoModelForImageTextToText.from_pretrained(run / "output" / "merged", dtype=torch.float32).eval())
    # The NF4 rounding of the base against the size of the update LoRA learned, over the LoRA targets.
    nf4 = AutoModelForImageTextToText.from_pretrained(nf4_base_dir(run), dtype=torch.float32).state_dict()
    adapted = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(cfg.base_model, dtype=cfg.torch_dtype),
                                        run / "output")
    rounding = update = 0.0
    for name, module in adapted.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            key = name.removeprefix("base_model.model.") + ".weight"
            rounding += (nf4[key] - module.base_layer.weight.detach().float()).pow(2).sum().item()
            delta = module.lora_B["default"].weight.float() @ module.lora_A["default"].weight.float() * module.scaling["default"]
            update += delta.pow(2).sum().item()
    plain = logits(adapted.merge_and_unload().float().eval())
    return {
        "model": str(cfg.base_model), "dtype": str(cfg.torch_dtype).removeprefix("torch."), "examples": len(inputs),
        "merged_vs_trained": logit_gap(trained, merged), "plain_merge_vs_trained": logit_gap(trained, plain),
        "nf4_rounding_over_update": (rounding / update) ** 0.5 if update else None,
    }


def report(result: dict) -> str:
    lines = [f"QLoRA on {Path(result['model']).name} ({result['dtype']}), {result['examples']} validation rows, "
             f"{result['merged_vs_trained']['positions']} positions:",
             f"  {'served model':<44}{'max |logit diff|':>18}{'relative':>10}{'top-1 agree':>14}"]
    for label, key in (("merged into the dequantized NF4 base (vlm3)", "merged_vs_trained"),
                       ("merged into the original base (plain merge)", "plain_merge_vs_trained")):
        gap = result[key]
        lines.append(f"  {label:<44}{gap['max_abs_diff']:>18.3e}{gap['relative']:>10.2e}"
                     f"{gap['top1_agree']:>8}/{gap['positions']}")
    ratio = result.get("nf4_rounding_over_update")
    if ratio is not None:
        lines.append(f"  NF4 rounding of the LoRA targets' base weights: {ratio:.2f}x the norm of the update LoRA learned")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / ".cache" / "tiny-qwen2-vl")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto", help="auto: fp32 on a CPU")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: the trainer-environment half
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure.resolve(), args.examples)))
        return 0
    from vlm3.train.trainer_env import TrainerEnv

    with tempfile.TemporaryDirectory(prefix="vlm3-qlora-") as tmp:
        run, check = build_run(Path(tmp), args.model, args.epochs, args.precision)
        env = TrainerEnv.locate()
        proc = subprocess.run([str(env.python), "-m", "bench.bench_qlora_merge", "--measure", str(run.path),
                               "--examples", str(args.examples)], cwd=ROOT, env=env.environ(), capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            return 1
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["merge_check"] = {k: check.get(k) for k in ("ok", "reference", "max_ulp_error", "max_abs_diff", "logit_tolerance")}
    print(report(result))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
