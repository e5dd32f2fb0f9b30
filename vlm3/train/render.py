"""A recipe rendered to the Axolotl config that trains it.

Usage:
    config = render_axolotl_config(recipe, base_model="/abs/.cache/tiny-qwen2-vl")
    yaml.safe_dump(config)   # what `axolotl train` reads, with the run directory as cwd

Paths in the config are relative to the run directory (data/, output/), so the same file
works locally and inside a Modal container that mounts the run elsewhere.
"""

from __future__ import annotations

from typing import Any

from vlm3.recipe.families import OUTPUT_HEAD, VISION_MODULE
from vlm3.recipe.schema import RECIPE_FIELD, Recipe

DATA_DIR = "data"
# Our Axolotl plugin (vlm3/train/axolotl_plugin.py): a frozen vision tower runs forward only; padding is recorded;
# use_cpu (bf16 on a CPU) and persistent dataloader workers, which Axolotl has no keys for.
PLUGIN = "vlm3.train.axolotl_plugin.Vlm3Plugin"
LIGER_PLUGIN = "axolotl.integrations.liger.LigerPlugin"
OUTPUT_DIR = "output"  # adapter and checkpoints; Axolotl writes the merged model to output/merged

DATALOADER_WORKERS = 4  # per training process (one per GPU); modal_support sizes each GPU's CPU and memory for them


def qlora_keys() -> dict[str, Any]:
    """QLoRA's keys: the language model's linear layers in NF4, the vision tower and the output head in bf16.

    Axolotl quantises with transformers' bitsandbytes quantizer, which converts every linear layer it is not
    told to skip; left to itself it quantises the vision tower too, so the served (un-quantized) tower would
    not be the one training saw. A skip list replaces transformers' default one (the output head), so it is
    named again. The merge folds the adapter into the dequantized NF4 weights (trainer_side.dequantize_base):
    the served model is the trained one.
    """
    return {"load_in_4bit": True, "bnb_config_kwargs": {"llm_int8_skip_modules": [VISION_MODULE, OUTPUT_HEAD]}}


def recipe_field(axolotl_key: str, overridden: set[str]) -> str:
    """The recipe field an Axolotl config key came from (`axolotl.<key>` for the raw override block)."""
    top = axolotl_key.split(".", 1)[0]
    if top in overridden or top not in RECIPE_FIELD:
        return f"axolotl.{axolotl_key}"
    return RECIPE_FIELD[top]


def deepspeed_config(stage: int) -> dict[str, Any]:
    """ZeRO config; "auto" lets the HF Trainer fill batch sizes, clipping and precision from the recipe."""
    zero: dict[str, Any] = {"stage": stage, "overlap_comm": True, "contiguous_gradients": True, "reduce_bucket_size": "auto"}
    if stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto",
            stage3_param_persistence_threshold="auto",
            stage3_gather_16bit_weights_on_model_save=True,  # a loadable checkpoint, not shards
        )
    return {
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "wall_clock_breakdown": False,
    }


def precision_keys(recipe: Recipe) -> dict[str, Any]:
    precision = recipe.train.precision
    if precision == "auto":
        precision = "fp32" if recipe.on_cpu else "bf16"
    return {"bf16": precision == "bf16", "fp16": precision == "fp16", "tf32": not recipe.on_cpu}


def render_axolotl_config(recipe: Recipe, base_model: str, has_val: bool = True) -> dict[str, Any]:
    train = recipe.train
    family = recipe.family
    dataset = {"ds_type": "json", "type": "chat_template", "field_messages": "messages"}
    config: dict[str, Any] = {
        "base_model": base_model,
        "trust_remote_code": recipe.model.trust_remote_code,
        # The family's multimodal settings that work with Axolotl 0.19 (processor, chat template, turn markers)
        **family.axolotl_keys(),
        "processor_kwargs": {"min_pixels": recipe.images.min_pixels, "max_pixels": recipe.images.max_pixels},
        "skip_prepare_dataset": True,
        "remove_unused_columns": False,
        "sample_packing": False,  # Axolotl cannot pack multimodal rows
        # Micro-batches of similar length pad less; reads the `length` column the converter writes.
        "group_by_length": True,
        "plugins": [PLUGIN],
        "datasets": [{"path": f"{DATA_DIR}/train.jsonl", **dataset}],
        "sequence_len": train.sequence_len,
        "micro_batch_size": train.micro_batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation_steps,
        "num_epochs": train.epochs,
        "learning_rate": train.learning_rate,
        "lr_scheduler": train.lr_scheduler,
        "warmup_ratio": train.warmup_ratio,
        "weight_decay": train.weight_decay,
        "max_grad_norm": train.max_grad_norm,
        "optimizer": "adamw_torch" if recipe.on_cpu and train.optimizer.endswith("_fused") else train.optimizer,
        **precision_keys(recipe),
        # As the recipe says on every device: the real-regime tests train the 7B recipes' config on a CPU.
        "gradient_checkpointing": train.gradient_checkpointing,
        "logging_steps": train.logging_steps,
        "save_steps": train.save_steps,
        "save_total_limit": train.save_total_limit,
        "seed": train.seed,
        "output_dir": OUTPUT_DIR,
        "auto_resume_from_checkpoints": True,  # a restarted or preempted run continues from the last checkpoint
        "dataloader_num_workers": 0 if recipe.on_cpu else DATALOADER_WORKERS,
        "save_safetensors": True,
    }
    if train.max_steps:
        config["max_steps"] = train.max_steps
    if has_val:
        config["test_datasets"] = [{"path": f"{DATA_DIR}/val.jsonl", "split": "train", **dataset}]
        config["eval_steps"] = train.eval_steps
        if train.keep_best:
            # The Trainer keeps the lowest-eval-loss checkpoint out of save_total_limit's rotation and loads it at the
            # end, so output/ (what is merged) holds the best weights; trainer_state.json names the checkpoint.
            config.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    else:
        config["val_set_size"] = 0.0
    if train.gradient_checkpointing:
        config["gradient_checkpointing_kwargs"] = {"use_reentrant": False}
    # PyTorch's SDPA unless the recipe asks for flash-attention (an opt-in image: see modal_support.FLASH_ATTN).
    config["attn_implementation"] = "flash_attention_2" if train.flash_attention and not recipe.on_cpu else "sdpa"
    if train.liger and not recipe.on_cpu:
        # Axolotl's Liger plugin patches the family (Liger's model list has it: families.Family.liger); Triton needs a GPU.
        config["plugins"].append(LIGER_PLUGIN)
        config.update(liger_fused_linear_cross_entropy=True, liger_rms_norm=True, liger_layer_norm=True,
                      liger_glu_activation=True, liger_rope=True)
    if train.method in ("lora", "qlora"):
        lora = train.lora
        config.update(
            adapter=train.method,
            lora_r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            lora_target_modules=family.lora_regex(lora.target_modules, lora.include_vision_tower),
            # Off for every family: Axolotl 0.19's fused LoRA kernels cannot find Qwen2-VL's or Qwen2.5-VL's attention
            # class, and for Qwen3-VL the MLP kernel is Triton (axolotl/kernels/swiglu.py), which the CPU tests cannot run
            lora_qkv_kernel=False,
            lora_o_kernel=False,
            lora_mlp_kernel=False,
            merge_method=train.merge_method,
        )
        if lora.modules_to_save:
            config["lora_modules_to_save"] = list(lora.modules_to_save)
        if train.method == "qlora":
            config.update(qlora_keys())
    if train.deepspeed:
        config["deepspeed"] = deepspeed_config(int(train.deepspeed[-1]))
    config.update(recipe.axolotl)
    return config
