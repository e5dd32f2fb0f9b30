"""Checks that need torch, transformers or Axolotl; run inside the trainer environment.

Usage (the light CLI calls these through the trainer environment's python):
    python -m vlm3.train.trainer_side validate-config RUN/axolotl.yaml --gpu H100 --gpu-count 1
    python -m vlm3.train.trainer_side dequantize-base RUN     # QLoRA: the base as training saw it, for the merge
    python -m vlm3.train.trainer_side verify-merge RUN

Each prints one JSON object on its last line of stdout; the caller reads that, so
Axolotl's own log chatter on stdout does not matter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from vlm3.recipe.families import FAMILIES, FamilyError, family_of

# Compute capability of each GPU this project renders for: Axolotl checks bf16/tf32/flash-attention against it.
GPU_CAPABILITY = {"H100": "sm_90", "H200": "sm_90", "B200": "sm_100", "A100-80GB": "sm_80", "A100-40GB": "sm_80",
                  "L40S": "sm_89", "L4": "sm_89", "A10G": "sm_86", "T4": "sm_75"}
# Significand bits (the implicit one included) of each dtype a merge can write. A value x stored in
# one of them is off from the exact x by at most half of ulp(x) = 2**(exponent(x) - bits + 1).
SIGNIFICAND_BITS = {"bfloat16": 8, "float16": 11, "float32": 24}
# The logits check: merged logits (its dtype's weights, computed in float32) against base + adapter
# in float32, within LOGIT_ROUNDOFFS unit roundoffs of the stored dtype plus FLOAT32_SUM_ROUNDOFFS of
# float32, times the largest logit.
# - Storage: each merged weight carries a relative rounding error of up to 2**-bits (bf16: 3.9e-3);
#   through a network these errors partly cancel. Measured on the 7B-shaped tiny model in bf16 with an
#   r 64 LoRA: max |diff| = 0.9 x 2**-8 x max |logit| (tests/test_real_regime.py); 8 allows 9x that.
# - Compute: both sides run in float32 but sum in a different order (W.x against W.x + s*B.(A.x)); such
#   rounding grows like sqrt(K) x 2**-24 for dot products of length K, and 1024 covers K up to 10**6
#   (the 7B's widest is 18,944). Measured on the fp32 demo: 1.2e-6 at max |logit| 2.75 (0.007 of the allowance).
# The exact check is the weight-by-weight one; this one catches a folder that loads or computes differently.
LOGIT_ROUNDOFFS = 8
FLOAT32_SUM_ROUNDOFFS = 1024
CHECK_EXAMPLES = 2  # validation rows the logits are compared on
# QLoRA's merge base: the base model quantized to NF4 exactly as Axolotl loaded it for training, then
# dequantized to the training dtype. LoRA learned its update on top of these weights, not the original ones.
NF4_BASE = "nf4_base"  # under the run's output/
NF4_RECORD = "vlm3_dequantized.json"  # in it: the source model, the quantization config, the modules quantized


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


def check_examples(run: Path, limit: int = CHECK_EXAMPLES) -> list[tuple[list[str], str]]:
    """(page paths, question) from the run's converted data (validation first), for the logits check: each
    row's pages in order (none for a text-only row), relative paths (normalised copies) under the run."""
    examples: list[tuple[list[str], str]] = []
    for name in ("val.jsonl", "train.jsonl"):
        path = run / "data" / name
        if not (path.exists() and path.stat().st_size):
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            if len(examples) >= limit:
                return examples
            row = json.loads(line)
            user = next(m for m in row["messages"] if m["role"] == "user")
            images = [str(run / c["path"]) if not Path(c["path"]).is_absolute() else c["path"]
                      for c in user["content"] if c["type"] == "image"]
            text = next(c["text"] for c in user["content"] if c["type"] == "text")
            examples.append((images, text))
    if not examples:
        raise FileNotFoundError(f"no converted data under {run / 'data'}")
    return examples


def first_example(run: Path) -> tuple[list[str], str]:
    """Page paths and a question from the run's converted data (the smoke test asks it)."""
    return check_examples(run, limit=1)[0]


def model_inputs(processor, image_paths: list[str], question: str):
    """The processor's inputs for one question about its pages, loaded as the trainer loads them (transformers' load_image)."""
    from transformers.image_utils import load_image

    messages = [{"role": "user", "content": [*({"type": "image"} for _ in image_paths), {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    images = [load_image(path) for path in image_paths]
    return processor(text=[prompt], images=images or None, return_tensors="pt")


def merge_dtype(config: dict) -> str:
    """The dtype Axolotl's merge loads the base in and saves the merged model in (from the rendered config)."""
    if config.get("bf16") in (True, "full", "auto") or config.get("bfloat16"):
        return "bfloat16"
    if config.get("fp16") or config.get("float16"):
        return "float16"
    return "float32"


def ulp(values, bits: int):
    """One unit in the last place of each value, for a dtype with `bits` significand bits (float32 tensors)."""
    import torch

    _, exponent = torch.frexp(values.abs().clamp_min(torch.finfo(torch.float32).tiny))  # |x| = m * 2**e, m in [0.5, 1)
    return torch.ldexp(torch.ones_like(values), exponent - bits)


def lora_weight_problems(peft_model, merged_state: dict, dtype_name: str) -> tuple[dict, list[str]]:
    """Every LoRA target, `modules_to_save` copy and untouched weight of the merged model, in its dtype.

    A merge in dtype d computes d(d(W) + d(scale * B @ A)): two roundings, so each merged weight is within
    one ulp of the larger operand of that addition of the exact d(W) + scale * B @ A. Modules to save are
    the trained copies cast to d; every other weight is the base's, cast to d.
    """
    import torch
    from peft.tuners.lora import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    dtype, bits = getattr(torch, dtype_name), SIGNIFICAND_BITS[dtype_name]
    problems: list[str] = []
    targets = saved = 0
    worst_ulps = 0.0
    checked: set[str] = set()
    for name, module in peft_model.named_modules():
        key = name.removeprefix("base_model.model.")
        if isinstance(module, LoraLayer) and "default" in module.lora_A:
            weight_key = f"{key}.weight"
            checked.add(weight_key)
            targets += 1
            merged = merged_state.get(weight_key)
            if merged is None:
                problems.append(f"LoRA target {weight_key} is missing from the merged model")
                continue
            base = module.base_layer.weight.detach().to(dtype).float()  # the base the merge loaded, in its dtype
            delta = module.lora_B["default"].weight.detach().float() @ module.lora_A["default"].weight.detach().float()
            delta = delta * module.scaling["default"]
            expected = base + delta
            allowed = ulp(torch.maximum(base.abs(), delta.abs()).maximum(expected.abs()), bits)
            error = (merged.float() - expected).abs() / allowed
            worst = error.max().item()
            worst_ulps = max(worst_ulps, worst)
            if worst > 1.0:
                unchanged = torch.equal(merged.float(), base)
                why = "equals the base weight: the merge dropped this LoRA target" if unchanged else "differs from W + scale*B@A"
                problems.append(f"LoRA target {weight_key} {why} ({worst:.1f} ulp of {dtype_name} at worst; 1 allowed)")
        elif isinstance(module, ModulesToSaveWrapper):
            trained = module.modules_to_save["default"]
            for param_name, param in trained.named_parameters():
                weight_key = f"{key}.{param_name}"
                checked.add(weight_key)
                saved += 1
                merged = merged_state.get(weight_key)
                if merged is None:
                    problems.append(f"modules_to_save {weight_key} is missing from the merged model")
                elif not torch.equal(merged, param.detach().to(dtype)):
                    same_as_base = torch.equal(merged, module.original_module.get_parameter(param_name).detach().to(dtype))
                    why = "equals the base's (the trained copy was dropped)" if same_as_base else "differs from the trained copy"
                    problems.append(f"modules_to_save {weight_key} {why}; merge with train.merge_method: legacy")
    untouched = 0
    base_state = {k.removeprefix("base_model.model."): v for k, v in peft_model.state_dict().items()
                  if "lora_" not in k and "modules_to_save" not in k}
    for key, merged in merged_state.items():
        if key in checked:
            continue
        module, _, leaf = key.rpartition(".")
        candidates = (key, f"{module}.base_layer.{leaf}", f"{module}.original_module.{leaf}")  # PEFT's wrappers
        base = next((base_state[c] for c in candidates if c in base_state), None)
        if base is None:
            problems.append(f"{key} of the merged model has no counterpart in the base model")
            continue
        untouched += 1
        if not torch.equal(merged, base.detach().to(dtype)):
            problems.append(f"{key} is no LoRA target but differs from the base weight")
    if merged_state and next(iter(merged_state.values())).dtype != dtype:
        problems.append(f"the merged weights are {next(iter(merged_state.values())).dtype}, the config trains in {dtype_name}")
    summary = {"lora_targets": targets, "modules_to_save": saved, "untouched_weights": untouched, "max_ulp_error": round(worst_ulps, 3)}
    return summary, problems


def logits_problems(reference: list, merged: list, dtype_name: str) -> tuple[dict, list[str]]:
    """Merged logits against base + adapter (float32): within the dtype's rounding allowance of the largest
    logit (see LOGIT_ROUNDOFFS), and the same top-1 token wherever the reference's top two are further apart than twice that."""
    import torch

    roundoff = LOGIT_ROUNDOFFS * 2.0 ** -SIGNIFICAND_BITS[dtype_name] + FLOAT32_SUM_ROUNDOFFS * 2.0 ** -SIGNIFICAND_BITS["float32"]
    ref = torch.cat([r.flatten(0, -2) for r in reference])
    out = torch.cat([m.flatten(0, -2) for m in merged])
    tolerance = roundoff * ref.abs().max().item()
    diff = (out - ref).abs().max().item()
    top2 = ref.topk(2, dim=-1).values
    decided = (top2[:, 0] - top2[:, 1]) > 2 * tolerance
    agree = ref.argmax(-1) == out.argmax(-1)
    disagree = int((~agree & decided).sum())
    summary = {
        "max_abs_diff": diff, "logit_tolerance": tolerance, "logit_scale": ref.abs().max().item(),
        "positions": int(ref.shape[0]), "top1_checked": int(decided.sum()), "top1_agree": int((agree & decided).sum()),
    }
    problems = []
    if diff > tolerance:
        problems.append(f"merged logits differ from base+adapter by {diff:.2e} (> {tolerance:.2e}, the {dtype_name} "
                        "rounding allowance of the largest logit): the merged folder computes something else")
    if disagree:
        problems.append(f"the merged model's top-1 token differs from base+adapter's at {disagree} of {int(decided.sum())} positions")
    return summary, problems


def nf4_base_dir(run: Path) -> Path:
    return run / "output" / NF4_BASE


def training_quantization(config_file: Path):
    """The BitsAndBytesConfig Axolotl trains this config with, from Axolotl's own model loader."""
    from axolotl.cli.config import load_cfg
    from axolotl.loaders.model import ModelLoader

    cfg = load_cfg(str(config_file))
    loader = ModelLoader(cfg, tokenizer=None)
    loader._set_quantization_config()  # Axolotl 0.19: fills model_kwargs["quantization_config"] (tests pin it)
    return cfg, loader.model_kwargs.get("quantization_config")


def dequantize_base(run: Path) -> dict:
    """Write output/nf4_base: the base quantized as QLoRA training quantized it, dequantized, with its processor.

    `axolotl merge-lora` then folds the adapter into these weights (--base-model), so the served model computes
    what training computed. The folder appears whole or not at all (written beside it, then renamed).
    """
    import shutil

    import torch
    from bitsandbytes.nn import Linear4bit
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg, quantization = training_quantization(run / "axolotl.yaml")
    if quantization is None or not getattr(quantization, "load_in_4bit", False):
        return {"ok": False, "problems": [f"{run / 'axolotl.yaml'} does not train in 4-bit (load_in_4bit): nothing to dequantize"]}
    # On a GPU bitsandbytes quantizes with the kernels training used; on a CPU with its CPU backend (same NF4 code book).
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForImageTextToText.from_pretrained(cfg.base_model, quantization_config=quantization,
                                                        dtype=cfg.torch_dtype, device_map=device)
    quantized = sorted(name for name, module in model.named_modules() if isinstance(module, Linear4bit))
    model = model.dequantize().to("cpu")
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config  # a plain checkpoint: vLLM would try to load it as bitsandbytes
    final = nf4_base_dir(run)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    AutoProcessor.from_pretrained(cfg.base_model).save_pretrained(partial)
    settings = {k: str(v) if isinstance(v, torch.dtype) else v for k, v in quantization.to_dict().items()}
    record = {"base_model": str(cfg.base_model), "dtype": str(cfg.torch_dtype).removeprefix("torch."), "device": device,
              "quantization": json.loads(json.dumps(settings, default=str)), "quantized_modules": quantized}
    (partial / NF4_RECORD).write_text(json.dumps(record, indent=1), encoding="utf-8")
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return {"ok": True, "problems": [], "nf4_base": str(final), "quantized_modules": len(quantized), "device": device}


def nf4_base_problems(run: Path, config: dict) -> list[str]:
    """The merge base of a QLoRA run is the dequantized NF4 base of this config's model, the vision tower left whole."""
    record_file = nf4_base_dir(run) / NF4_RECORD
    try:
        record = json.loads(record_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"{record_file} is missing or unreadable: the QLoRA merge has no dequantized base; run `vlm3 merge {run}` again"]
    problems = []
    if record.get("base_model") != str(config["base_model"]):
        problems.append(f"{record_file} was dequantized from {record.get('base_model')}, the config trains {config['base_model']}")
    from vlm3.recipe.families import OUTPUT_HEAD, VISION_MODULE

    kept_whole = [m for m in record.get("quantized_modules", []) if m.startswith(f"{VISION_MODULE}.") or m == OUTPUT_HEAD]
    if kept_whole:
        problems.append(f"{len(kept_whole)} module(s) of the vision tower or output head were quantized (e.g. {kept_whole[0]}): "
                        "the served un-quantized weights would not be the trained ones; render the config again")
    if not record.get("quantized_modules"):
        problems.append(f"{record_file} lists no quantized module: the merge base is the original model, not the one trained")
    return problems


def verify_merge(run: Path, checkpoint: int | None = None) -> dict:
    """The merged folder is what vLLM and transformers need, and holds what base+adapter computes, in its dtype.

    `checkpoint`: the adapter of output/checkpoint-N, merged into output/checkpoint-N/merged."""
    import torch
    import yaml
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    recipe = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))
    config = yaml.safe_load((run / "axolotl.yaml").read_text(encoding="utf-8"))
    weights = run / "output" if checkpoint is None else run / "output" / f"checkpoint-{checkpoint}"
    merged = weights / "merged"
    problems: list[str] = []

    model_config = json.loads((merged / "config.json").read_text()) if (merged / "config.json").exists() else {}
    family = FAMILIES.get(model_config.get("model_type"))
    try:
        base_family = family_of(config["base_model"])
    except FamilyError:
        base_family = family  # a Hub model whose config is not on this machine: the merged folder's is what is served
    if family is None:
        problems.append(f"config.json model_type is {model_config.get('model_type')!r}, not one of {sorted(FAMILIES)}: "
                        "the merged folder is not a model vLLM serves as a Qwen-VL")
    elif family is not base_family:
        problems.append(f"config.json model_type is {family.name} but the base model {config['base_model']} is {base_family.name}")
    elif model_config.get("architectures") != [family.architecture]:
        problems.append(f"config.json architectures is {model_config.get('architectures')}, vLLM needs ['{family.architecture}'] for {family.label}")
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
    patching = {"patch_size": processor.image_processor.patch_size, "merge_size": processor.image_processor.merge_size}
    if family is not None and patching != {"patch_size": family.patch_size, "merge_size": family.merge_size}:
        problems.append(f"the image processor cuts {patching['patch_size']}-px patches merged {patching['merge_size']}x{patching['merge_size']}; "
                        f"{family.label} needs {family.patch_size}-px patches merged {family.merge_size}x{family.merge_size}")

    inputs = [model_inputs(processor, images, question) for images, question in check_examples(run)]
    dtype_name = merge_dtype(config) if config.get("adapter") else "float32"
    result: dict = {"family": family.name if family else None, "architectures": model_config["architectures"], "pixel_limits": limits, "dtype": dtype_name}
    with torch.no_grad():
        # Loaded as saved (no conversion), so the weights are compared in the dtype the merge wrote.
        merged_model = AutoModelForImageTextToText.from_pretrained(merged, dtype="auto").eval()
        if config.get("adapter"):
            # QLoRA learned its update on the dequantized NF4 weights: those are the reference, not the original base.
            reference = config["base_model"]
            if config.get("load_in_4bit"):
                qlora_problems = nf4_base_problems(run, config)
                if qlora_problems:
                    return {**result, "ok": False, "problems": problems + qlora_problems}
                reference = nf4_base_dir(run)
                result["reference"] = "dequantized NF4 base + adapter"
            base = AutoModelForImageTextToText.from_pretrained(reference, dtype=torch.float32)
            adapted = PeftModel.from_pretrained(base, weights).eval()
            weights, weight_problems = lora_weight_problems(adapted, merged_model.state_dict(), dtype_name)
            result.update(weights)
            problems += weight_problems
            adapter_logits = [adapted(**batch).logits for batch in inputs]
            with adapted.disable_adapter():
                base_logits = [adapted(**batch).logits for batch in inputs]
            moved = max((a - b).abs().max().item() for a, b in zip(adapter_logits, base_logits))
            del adapted, base
            merged_model = merged_model.float()  # exact: every value of a narrower float is a float32
            merged_logits = [merged_model(**batch).logits for batch in inputs]
            logits, logit_problems = logits_problems(adapter_logits, merged_logits, dtype_name)
            result.update(logits, adapter_effect=moved)
            problems += logit_problems
            if moved == 0.0:
                problems.append("the adapter does not change the base model's logits: nothing was trained")
        else:
            merged_model(**inputs[0])  # a full fine-tune: the folder loads and runs
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
    verify.add_argument("--checkpoint", type=int, help="verify output/checkpoint-N/merged against that checkpoint's adapter")
    dequantize = sub.add_parser("dequantize-base")
    dequantize.add_argument("run", type=Path)
    args = parser.parse_args(argv)
    if args.command == "validate-config":
        return emit(validate_config(args.config, args.gpu, args.gpu_count))
    if args.command == "dequantize-base":
        return emit(dequantize_base(args.run.resolve()))
    return emit(verify_merge(args.run, args.checkpoint))


if __name__ == "__main__":
    sys.exit(main())
