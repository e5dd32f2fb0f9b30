"""Recipes: one YAML file per experiment, validated before anything expensive starts.

Usage:
    from vlm3.recipe.schema import load_recipe
    recipe = load_recipe("recipes/e30m3_lora.yaml")   # raises RecipeError listing every problem

Paths inside a recipe are relative to the directory vlm3 runs from (the project root),
so the pipeline's default `training_data/vlm_train.jsonl` works as written.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from vlm3.recipe.families import FAMILIES, LANGUAGE_MODEL_PROJECTIONS, Family, FamilyError, family_of

PIXELS_PER_TOKEN = FAMILIES["qwen2_vl"].pixels_per_token  # the smallest of the families (28 x 28); a recipe's own: recipe.family
DEFAULT_MIN_PIXELS = 56 * 56  # the Qwen2-VL processor's own default
DEFAULT_MAX_PIXELS = 1280 * PIXELS_PER_TOKEN  # ~1 MP: 1,240 tokens for a 1700x2200 page with Qwen2-VL

Projection = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Modal GPU names this project renders (https://modal.com/docs/guide/gpu); ":N" asks for N cards.
GpuName = Literal["H100", "H200", "A100-80GB", "A100-40GB", "L40S", "A10G", "L4", "T4", "B200", "cpu"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSpec(Strict):
    base: str = "Qwen/Qwen2-VL-7B-Instruct"  # a Hub id, or a local folder (the tiny CPU model)
    trust_remote_code: bool = False


MetadataName = Literal["section", "page", "content_type", "page_text"]
MAX_IMAGES_PER_ROW = 32  # pages in one prompt: past this a row is a document, not a question about pages


class DataSpec(Strict):
    train: str = "training_data/vlm_train.jsonl"
    val: str = "training_data/vlm_val.jsonl"
    images_root: str = "training_data"  # the pipeline writes "images/21-03.jpg" relative to this
    probes: str | None = None  # hand-written probes (JSONL), e.g. harness/probes/e30m3.jsonl
    max_samples: int | None = Field(default=None, ge=1)  # cap training rows (train-dev runs)
    max_val_samples: int | None = Field(default=None, ge=1)
    system_prompt: str | None = None
    # Axolotl neither truncates nor drops long multimodal rows: decide here what happens to them.
    long_rows: Literal["fail", "drop"] = "fail"
    # The pipeline's metadata names for vlm3's own, e.g. {section: section_title, page: page_no,
    # content_type: type, page_text: ocr_text}; unmapped rows group as "unknown" in reports and `vlm3 weak`.
    metadata: dict[MetadataName, str] = Field(default_factory=dict)
    # Pages one row may show (two-page spreads, a figure and its table); each costs its visual tokens.
    max_images_per_row: int = Field(default=4, ge=1, le=MAX_IMAGES_PER_ROW)

    @field_validator("metadata")
    @classmethod
    def metadata_names(cls, names: dict[str, str]) -> dict[str, str]:
        for ours, theirs in names.items():
            if not isinstance(theirs, str) or not theirs.strip():
                raise ValueError(f"{ours}: give the pipeline's metadata key, e.g. section: section_title")
        return names


class ImageSpec(Strict):
    """Pixel limits of the model's image processor: one setting for training, serving and estimates."""

    min_pixels: int = Field(default=DEFAULT_MIN_PIXELS, ge=PIXELS_PER_TOKEN)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=PIXELS_PER_TOKEN)

    @model_validator(mode="after")
    def min_not_above_max(self) -> "ImageSpec":
        if self.min_pixels > self.max_pixels:
            raise ValueError(f"min_pixels ({self.min_pixels}) is above max_pixels ({self.max_pixels})")
        return self


class LoraSpec(Strict):
    r: int = Field(default=64, ge=1)  # higher: more capacity, memory and adapter size
    alpha: int = Field(default=128, ge=1)
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    target_modules: list[Projection] = Field(default_factory=lambda: list(LANGUAGE_MODEL_PROJECTIONS), min_length=1)
    # Language model only by default: vLLM drops LoRA on the vision tower unless merged.
    include_vision_tower: bool = False
    modules_to_save: list[str] = Field(default_factory=list)


class TrainSpec(Strict):
    method: Literal["lora", "qlora", "full"] = "lora"
    lora: LoraSpec = Field(default_factory=LoraSpec)
    epochs: int = Field(default=3, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    micro_batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=4, ge=1)
    learning_rate: float = Field(default=2e-4, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    weight_decay: float = Field(default=0.0, ge=0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    optimizer: str = "adamw_torch_fused"
    sequence_len: int = Field(default=4096, ge=64)
    # bf16 on GPUs; "fp32" is what a CPU can run. "auto": bf16 on a GPU, fp32 on a CPU.
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool = True  # off: ~44% faster, more activation memory
    flash_attention: bool = False  # SDPA; true needs the flash-attn trainer image (VLM3_FLASH_ATTN=1, compiled once; docs/modal.md)
    # Liger's Triton kernels (GPU only; ignored on CPU): fused linear cross-entropy never holds the
    # full logits (~10 bytes per vocabulary entry per token), plus RMSNorm, LayerNorm, SwiGLU and M-RoPE.
    liger: bool = False
    deepspeed: Literal["zero1", "zero2", "zero3"] | None = None
    eval_steps: int = Field(default=100, ge=1)
    save_steps: int = Field(default=100, ge=1)
    logging_steps: int = Field(default=10, ge=1)
    save_total_limit: int = Field(default=3, ge=1)
    # With validation data: the checkpoint with the lowest eval loss is kept (whatever save_total_limit) and its
    # weights are the run's output, the ones merged. Only saved steps can be the best: save_steps a multiple of eval_steps.
    keep_best: bool = True
    seed: int = 42
    # legacy merges modules_to_save too; Axolotl 0.19's memory_efficient silently drops them.
    merge_method: Literal["legacy", "memory_efficient"] = "legacy"

    @model_validator(mode="after")
    def full_needs_no_lora_settings(self) -> "TrainSpec":
        if self.method == "full" and "lora" in self.model_fields_set:
            raise ValueError("train.lora is set but train.method is 'full': remove the lora block or use method 'lora'")
        return self

    @model_validator(mode="after")
    def best_needs_aligned_steps(self) -> "TrainSpec":
        if self.keep_best and self.save_steps % self.eval_steps:
            raise ValueError(f"train.save_steps ({self.save_steps}) is not a multiple of train.eval_steps ({self.eval_steps}): "
                             "the best checkpoint is chosen among steps that were both evaluated and saved; set save_steps to "
                             f"{self.eval_steps} (or a multiple), or keep_best: false to keep the last step's weights")
        return self


class ComputeSpec(Strict):
    gpu: str = "H100"  # Modal GPU, "H100:4" for four cards; "cpu" runs locally
    timeout_hours: float = Field(default=6.0, gt=0, le=24)  # Modal caps a function at 24 h

    @field_validator("gpu")
    @classmethod
    def known_gpu(cls, gpu: str) -> str:
        return check_gpu_name(gpu)

    @property
    def gpu_type(self) -> str:
        return self.gpu.partition(":")[0]

    @property
    def gpu_count(self) -> int:
        count = self.gpu.partition(":")[2]
        return int(count) if count else (0 if self.gpu == "cpu" else 1)


GPU_COUNT_SPELLINGS = re.compile(r"^\s*(?:(?P<before>\d+)\s*[x*×]\s*(?P<name1>.+?)|(?P<name2>.+?)\s*(?:[x*×:]|\s)\s*(?P<after>\d+))\s*$",
                                 re.IGNORECASE)


def check_gpu_name(gpu: str) -> str:
    name, _, count = gpu.partition(":")
    allowed = GpuName.__args__  # type: ignore[attr-defined]
    if name not in allowed:
        hints = gpu_hints(gpu)
        raise ValueError(
            f"unknown GPU {name!r}" + (f" (did you mean {' or '.join(map(repr, hints))}?)" if hints else f"; one of {', '.join(allowed)}")
        )
    if count and (not count.isdigit() or not 1 <= int(count) <= 8):
        raise ValueError(f"GPU count {count!r} must be a number from 1 to 8, as in 'H100:4'")
    return gpu


def gpu_hints(gpu: str) -> list[str]:
    """Names the user may have meant, with their count kept: 'a100x4' -> ['A100-80GB:4', 'A100-40GB:4']."""
    allowed = [a for a in GpuName.__args__ if a != "cpu"]  # type: ignore[attr-defined]
    name, count = gpu.partition(":")[0], gpu.partition(":")[2]
    spelled = GPU_COUNT_SPELLINGS.match(gpu)
    if spelled:  # "a100x4", "4xH100", "h100 * 2"
        name = spelled["name1"] or spelled["name2"]
        count = spelled["before"] or spelled["after"]

    def squash(text: str) -> str:
        return re.sub(r"[^A-Z0-9]", "", text.upper())

    wanted = squash(name)
    hits = [a for a in allowed if squash(a) == wanted] or [a for a in allowed if wanted and squash(a).startswith(wanted)]  # "A100": both
    if not hits:
        close = difflib.get_close_matches(wanted, [squash(a) for a in allowed], n=1, cutoff=0.5)
        hits = [a for a in allowed if close and squash(a) == close[0]]
    if not hits and name.strip().lower() == "cpu":
        return ["cpu"]
    suffix = f":{count}" if count and count.isdigit() and int(count) > 1 else ""
    return [h + suffix for h in hits]


class ServeSpec(Strict):
    served_model_name: str | None = None  # defaults to the recipe name
    gpu: str = "A10G"  # 24 GB: a 7B bf16 model (~16 GB) leaves ~4 GB of KV cache: keep max_model_len short
    max_model_len: int = Field(default=4096, ge=256)
    gpu_memory_utilization: float = Field(default=0.90, gt=0, le=1)
    max_num_seqs: int = Field(default=32, ge=1)
    scaledown_window_s: int = Field(default=300, ge=2)  # idle seconds before the container stops
    concurrent_inputs: int = Field(default=32, ge=1)
    api_key_secret: str = "vlm3-endpoint"  # Modal Secret holding VLLM_API_KEY
    serve_adapter: bool = False  # --enable-lora over the base model instead of the merged weights
    vllm_version: str = "0.33.0"  # the Modal vLLM image's pin: reads transformers-5 checkpoints

    @field_validator("gpu")
    @classmethod
    def known_gpu(cls, gpu: str) -> str:
        return check_gpu_name(gpu)


# Claude models Anthropic has retired: a judge run with one fails on its first call.
RETIRED_JUDGES = {"claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20240620", "claude-3-sonnet-20240229",
                  "claude-3-opus-20240229", "claude-3-haiku-20240307", "claude-2.1", "claude-2.0", "claude-instant-1.2"}


class JudgeSpec(Strict):
    provider: Literal["anthropic", "openai"] = "anthropic"
    model: str = "claude-sonnet-5-5"  # the current Sonnet; claude-sonnet-4-5 retires 2026-11-30
    base_url: str | None = None  # an OpenAI-compatible judge endpoint when provider is openai
    metrics: list[Literal["answer_relevancy", "faithfulness", "correctness", "hallucination", "rubric"]] = Field(
        default_factory=lambda: ["answer_relevancy", "faithfulness", "correctness"]
    )
    threshold: float = Field(default=0.7, ge=0, le=1)
    max_unscored_fraction: float = Field(default=0.05, ge=0, le=1)
    concurrency: int = Field(default=4, ge=1)
    use_batch_api: bool = False

    @field_validator("model")
    @classmethod
    def not_retired(cls, model: str) -> str:
        if model in RETIRED_JUDGES:
            raise ValueError(f"{model} is retired; use a current model such as 'claude-sonnet-5-5'")
        return model


class EvalSpec(Strict):
    # What the judge is told the pages are from: "the Kaminari KX750 service manual", "our PLC programming guide".
    document: str = Field(default="the manual", min_length=1, max_length=200)
    max_tokens: int = Field(default=512, ge=1)
    concurrency: int = Field(default=8, ge=1)
    request_timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    probe_pass_threshold: float = Field(default=0.85, ge=0, le=1)
    max_samples: int | None = Field(default=None, ge=1)  # eval-quick
    judge: JudgeSpec | None = Field(default_factory=JudgeSpec)


class HubSpec(Strict):
    """Private Hugging Face repos to push to (optional; needs the `huggingface` Modal Secret)."""

    dataset_repo: str | None = None  # the converted dataset, pushed private
    model_repo: str | None = None  # the merged model, pushed private after the smoke test


class Recipe(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = ""
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    images: ImageSpec = Field(default_factory=ImageSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    compute: ComputeSpec = Field(default_factory=ComputeSpec)
    serve: ServeSpec = Field(default_factory=ServeSpec)
    eval: EvalSpec = Field(default_factory=EvalSpec)
    hub: HubSpec = Field(default_factory=HubSpec)
    # Raw Axolotl keys, applied last over the rendered config (power users).
    axolotl: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def cross_field_rules(self, info: ValidationInfo) -> "Recipe":
        """Every rule across fields at once (rule_problems); `vlm3 validate` reads them after the field checks."""
        if (info.context or {}).get("fields_only"):
            return self
        problems = rule_problems(self)
        if problems:
            raise ValueError("\n  ".join(problems))  # one line each, as RecipeError lists them
        return self

    @property
    def family(self) -> Family:
        """The base model's family (vlm3.recipe.families); FamilyError when the model cannot be read."""
        return family_of(self.model.base)

    @property
    def on_cpu(self) -> bool:
        return self.compute.gpu == "cpu"

    @property
    def served_name(self) -> str:
        return self.serve.served_model_name or self.name


def rule_problems(recipe: Recipe) -> list[str]:
    """One sentence per cross-field rule the recipe breaks: the method against the card, then what the model's
    family cannot do (Axolotl 0.19, transformers 5.16, vLLM 0.33)."""
    problems = []
    train = recipe.train
    if train.method == "qlora" and recipe.compute.gpu == "cpu":
        # bitsandbytes' CPU layers train, but an evaluation pass repacks their weights and the next training step fails.
        problems.append("train.method 'qlora' needs a GPU (bitsandbytes 4-bit); set compute.gpu or use 'lora'")
    if train.method == "qlora" and train.merge_method == "memory_efficient":
        problems.append("train.merge_method 'memory_efficient' with train.method 'qlora': Axolotl 0.19's NF4 simulation "
                        "rounds every weight (embeddings, output head, vision tower), though training quantized only "
                        "the language model's linear layers, so the served model would not be the trained one; use 'legacy'")
    if train.method == "qlora" and recipe.serve.serve_adapter:
        problems.append("serve.serve_adapter with train.method 'qlora' would serve the adapter on the un-quantized base, "
                        "not the NF4 weights it was trained on; serve the merged model (serve_adapter: false), which "
                        "folds the adapter into the dequantized NF4 base")
    if train.deepspeed and recipe.compute.gpu_count < 2:
        problems.append(f"train.deepspeed is set but compute.gpu {recipe.compute.gpu!r} has one card: use e.g. 'H100:4'")
    try:
        family = family_of(recipe.model.base)
    except FamilyError as exc:
        if not exc.missing_folder:  # a local model not built yet is checked where it is used (family_of raises there)
            problems.append(str(exc))
        return problems
    return problems + family_problems(recipe, family)


# Axolotl keys a recipe's raw `axolotl:` block may not set for a family, and why (Axolotl 0.19's code).
LORA_KERNEL_KEYS = ("lora_qkv_kernel", "lora_o_kernel", "lora_mlp_kernel")


def family_problems(recipe: Recipe, family: Family) -> list[str]:
    """One sentence per thing the family cannot do as the recipe asks."""
    problems = []
    images = recipe.images
    if images.min_pixels < family.pixels_per_token:
        problems.append(f"images.min_pixels {images.min_pixels} is below one {family.label} visual token "
                        f"({family.factor}x{family.factor} = {family.pixels_per_token} pixels): use at least {family.pixels_per_token}")
    raw = recipe.axolotl
    for key in LORA_KERNEL_KEYS:
        if raw.get(key) and not family.lora_kernels:
            problems.append(f"axolotl.{key}: Axolotl 0.19's fused LoRA kernels cannot find {family.label}'s attention class "
                            f"(model_type {family.name}); remove the key")
    if raw.get("lora_target_linear"):
        problems.append(f"axolotl.lora_target_linear: adapts every linear layer, {family.label}'s vision tower included; "
                        "use train.lora.target_modules (language model) and train.lora.include_vision_tower")
    template = raw.get("chat_template", family.chat_template)
    boundaries = raw.get("role_boundaries", family.role_boundaries)
    if template != "qwen2_vl" and not boundaries:
        problems.append(f"axolotl.chat_template {template!r}: Axolotl 0.19 masks multimodal rows to the assistant turns only with "
                        "its qwen2_vl template or with role_boundaries; without them it trains on the questions too. "
                        f"Remove the key ({family.label} trains with {family.chat_template!r})")
    plugins = raw.get("plugins")
    if boundaries and plugins is not None and "vlm3.train.axolotl_plugin.Vlm3Plugin" not in plugins:
        problems.append(f"axolotl.plugins: drops vlm3.train.axolotl_plugin.Vlm3Plugin, without which Axolotl 0.19 cannot read "
                        f"{family.label}'s role_boundaries; keep it in the list")
    if recipe.train.liger and not family.liger:
        problems.append(f"train.liger: Liger has no kernels for {family.label}; set it to false")
    if recipe.serve.serve_adapter and not family.vllm_lora:
        problems.append(f"serve.serve_adapter: vLLM 0.33's {family.architecture} takes no LoRA adapters; serve the merged model")
    return problems


class RecipeError(Exception):
    """A recipe that cannot be used; str() is the whole message for the user."""

    def __init__(self, path: str | Path, problems: list[str]):
        self.path = str(path)
        self.problems = problems
        super().__init__(f"{self.path} is not a valid recipe:\n" + "\n".join(f"  {p}" for p in problems))


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read and validate a recipe file; every problem is reported at once."""
    return parse_recipe(read_raw_recipe(path, overrides), path)


def read_raw_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The recipe file's mapping, with command-line overrides set; RecipeError when it cannot be read as one."""
    path = Path(path)
    try:
        text = read_recipe_text(path)
    except FileNotFoundError:
        raise RecipeError(path, ["file not found: pass a path such as recipes/tiny_cpu_demo.yaml"]) from None
    except IsADirectoryError:
        raise RecipeError(path, ["is a folder: pass the recipe files, e.g. recipes/*.yaml"]) from None
    except UnicodeDecodeError as exc:
        raise RecipeError(path, [f"not UTF-8 text (byte {exc.start}): save the recipe as UTF-8"]) from None
    except OSError as exc:
        raise RecipeError(path, [f"cannot be read ({exc.strerror})"]) from None
    try:
        raw = load_yaml_bounded(text)
    except YamlTooBig as exc:
        raise RecipeError(path, [str(exc)]) from None
    except RecursionError:
        raise RecipeError(path, [f"nested more than {MAX_YAML_DEPTH} levels deep: a recipe is a few levels of keys"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise RecipeError(path, [f"{where}not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    if not isinstance(raw, dict):
        raise RecipeError(path, ["the file must be a mapping of keys (name:, model:, data:, ...)"])
    for dotted, value in (overrides or {}).items():
        try:
            set_dotted(raw, dotted, value)
        except TypeError:
            raise RecipeError(path, [f"{dotted.rsplit('.', 1)[0]}: must be a mapping to set {dotted} from the command line"]) from None
    return raw


MAX_RECIPE_BYTES = 1_000_000  # a recipe is a page of settings; a megabyte is already absurd
TOO_BIG = "put long prompts and templates in files the recipe points to"


def read_recipe_text(path: Path) -> str:
    """The text of a regular file of at most MAX_RECIPE_BYTES, read no further than one byte past the limit.

    Opened without blocking and checked with fstat before any read: a FIFO would wait for a writer,
    /dev/zero never ends, and the stat of the path could change before the open."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(info.st_mode):
            raise RecipeError(path, ["is not a regular file (a pipe, device or socket): pass a recipe file such as recipes/tiny_cpu_demo.yaml"])
        if info.st_size > MAX_RECIPE_BYTES:
            raise RecipeError(path, [f"is {info.st_size:,} bytes, over the {MAX_RECIPE_BYTES:,}-byte limit for a recipe: {TOO_BIG}"])
        data = file.read(MAX_RECIPE_BYTES + 1)  # a file that grew since fstat is still cut here
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError(path, [f"is over the {MAX_RECIPE_BYTES:,}-byte limit for a recipe: {TOO_BIG}"])
    return data.decode("utf-8")
MAX_YAML_NODES = 100_000  # scalars, lists and mappings after aliases are expanded (a recipe has ~200)
MAX_YAML_DEPTH = 50  # nesting levels (a recipe has ~5)


class YamlTooBig(ValueError):
    """A YAML document that would expand past the node or depth limits (an alias bomb)."""


def load_yaml_bounded(text: str) -> Any:
    """yaml.safe_load, but the composed node graph is measured first: aliases share nodes, so a few
    lines can stand for billions of values once anything walks them ("billion laughs"). Measuring
    costs one visit per distinct node (sizes are memoised), and nothing is constructed past the limits."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None
    sizes: dict[int, int] = {}

    def expanded(current: yaml.Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise YamlTooBig(f"nested more than {MAX_YAML_DEPTH} levels deep: a recipe is a few levels of keys")
        if id(current) in sizes:
            return sizes[id(current)]
        sizes[id(current)] = MAX_YAML_NODES + 1  # a node met again while measuring itself: a cycle
        if isinstance(current, yaml.SequenceNode):
            children = current.value
        elif isinstance(current, yaml.MappingNode):
            children = [part for pair in current.value for part in pair]
        else:
            children = []
        total = 1
        for child in children:
            total += expanded(child, depth + 1)
            if total > MAX_YAML_NODES:
                raise YamlTooBig(f"expands to more than {MAX_YAML_NODES:,} values (YAML aliases such as *a repeat "
                                 "whole blocks): write the values out, or use fewer aliases")
        sizes[id(current)] = total
        return total

    expanded(node, 0)
    return yaml.SafeLoader(text).get_single_data()


def parse_recipe(raw: dict[str, Any], path: str | Path = "<recipe>") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise RecipeError(path, [describe_error(err) for err in exc.errors()]) from None


MAX_LENIENT_PASSES = 8  # field errors set aside per pass; a recipe has a few levels of keys


def recipe_problems(raw: dict[str, Any]) -> tuple[list[str], Recipe | None]:
    """Every problem of a recipe mapping at once, for `vlm3 validate`: the field checks, then the cross-field rules
    (rule_problems) over what is left once each failing field is set aside (its default stands in), so a schema
    error does not hide a refusal. A rule that names a set-aside field is not judged (its value was not read).
    Returns the problems and that recipe (None when even the stand-ins fail), for the checks that follow."""
    import copy

    problems: list[str] = []
    work = copy.deepcopy(raw)
    set_aside: list[str] = []
    recipe = None
    for _ in range(MAX_LENIENT_PASSES):
        try:
            recipe = Recipe.model_validate(work, context={"fields_only": True})
            break
        except ValidationError as exc:
            errors = exc.errors()
            problems += [p for p in (describe_error(e) for e in errors) if p not in problems]
            removed = [setting_aside(work, [str(part) for part in e["loc"]]) for e in errors]
            set_aside += [r for r in removed if r]
            if not any(removed):
                break
    if recipe is not None:
        for problem in rule_problems(recipe):
            if problem not in problems and not any(re.search(rf"\b{re.escape(field)}\b", problem) for field in set_aside):
                problems.append(problem)
    return problems, recipe


def setting_aside(raw: dict[str, Any], loc: list[str]) -> str:
    """Remove the deepest mapping key on `loc` (a list's item takes its whole list); its dotted name, '' if none.
    A missing or invalid `name` gets a stand-in instead, so the rest can still be checked."""
    node, path = raw, []
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            break
        path.append(part)
        if not isinstance(node[part], dict):
            break
        node = node[part]
    if loc == ["name"]:
        if raw.get("name") == "recipe":
            return ""
        raw["name"] = "recipe"
        return "name"
    if not path:
        return ""
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return ".".join(path)


def validate_recipe_file(path: str | Path) -> tuple[list[str], Recipe | None]:
    """`vlm3 validate`'s checks that need nothing but the file: reading, the schema and the cross-field rules."""
    try:
        raw = read_raw_recipe(path)
    except RecipeError as exc:
        return exc.problems, None
    return recipe_problems(raw)


def set_dotted(raw: dict[str, Any], dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for key in parents:
        if node.get(key) is None:
            node[key] = {}
        node = node[key]
        if not isinstance(node, dict):
            raise TypeError(dotted)
    node[leaf] = value


def describe_error(err: dict[str, Any]) -> str:
    """One line per problem: field, what is wrong, and a hint where one helps."""
    loc = [str(part) for part in err["loc"]]
    field = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{field}: unknown key{suggest_key(loc)}"
    message = err["msg"].removeprefix("Value error, ")
    if not loc:
        return message  # a whole-recipe check: its message names the fields it is about
    if err["type"] not in ("value_error", "missing") and "input" in err:
        got = err["input"]
        if not isinstance(got, (dict, list)):
            message += f", got {got!r}"
    return f"{field}: {message}"


# Where each Axolotl key vlm3 renders (vlm3.train.render) comes from in the recipe, so Axolotl's schema errors can name the recipe field.
RECIPE_FIELD = {
    "base_model": "model.base", "trust_remote_code": "model.trust_remote_code", "processor_type": "model.base",
    "chat_template": "model.base", "role_boundaries": "model.base",
    "processor_kwargs": "images", "sequence_len": "train.sequence_len", "micro_batch_size": "train.micro_batch_size",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps", "num_epochs": "train.epochs",
    "max_steps": "train.max_steps", "learning_rate": "train.learning_rate", "lr_scheduler": "train.lr_scheduler",
    "warmup_ratio": "train.warmup_ratio", "weight_decay": "train.weight_decay", "max_grad_norm": "train.max_grad_norm",
    "optimizer": "train.optimizer", "bf16": "train.precision", "fp16": "train.precision", "tf32": "compute.gpu",
    "gradient_checkpointing": "train.gradient_checkpointing", "attn_implementation": "train.flash_attention",
    "liger_fused_linear_cross_entropy": "train.liger",
    "logging_steps": "train.logging_steps", "save_steps": "train.save_steps", "eval_steps": "train.eval_steps",
    "save_total_limit": "train.save_total_limit", "load_best_model_at_end": "train.keep_best",
    "metric_for_best_model": "train.keep_best", "greater_is_better": "train.keep_best", "seed": "train.seed", "adapter": "train.method",
    "load_in_4bit": "train.method", "bnb_config_kwargs": "train.method", "lora_r": "train.lora.r", "lora_alpha": "train.lora.alpha",
    "lora_dropout": "train.lora.dropout", "lora_target_modules": "train.lora.target_modules",
    "lora_modules_to_save": "train.lora.modules_to_save", "merge_method": "train.merge_method",
    "deepspeed": "train.deepspeed", "datasets": "data.train", "test_datasets": "data.val",
}


# Axolotl 0.19 keys (AxolotlInputConfig) that vlm3 does not render, which users write at a recipe's top level;
# tests/test_validate.py checks each against Axolotl's schema. Keys vlm3 renders are RECIPE_FIELD's.
AXOLOTL_ONLY_KEYS = frozenset({
    "wandb_project", "wandb_entity", "wandb_name", "wandb_mode", "wandb_run_id", "wandb_watch", "wandb_log_model", "use_wandb",
    "mlflow_tracking_uri", "mlflow_experiment_name", "mlflow_run_name", "use_mlflow", "use_tensorboard",
    "comet_api_key", "comet_project_name", "comet_workspace", "use_comet",
    "hub_model_id", "hub_strategy", "push_dataset_to_hub", "dataset_prepared_path", "val_set_size", "special_tokens",
    "load_in_8bit", "peft_use_dora", "peft_use_rslora", "train_on_inputs",
    "sdp_attention", "xformers_attention", "torch_compile", "early_stopping_patience",
    "eval_strategy", "save_strategy",
    "evals_per_epoch", "saves_per_epoch", "warmup_steps", "neftune_noise_alpha", "resume_from_checkpoint",
    "group_by_length", "fsdp", "fsdp_config", "tokenizer_type", "unfrozen_parameters",
})


def axolotl_key_hint(key: str) -> str:
    """Where an Axolotl key written at a recipe's top level belongs ('' when it is not one)."""
    field = RECIPE_FIELD.get(key)
    if field == "train.method" and key == "adapter":
        return "; Axolotl's `adapter`, which vlm3 sets from train.method (lora, qlora or full): set that instead"
    if field:
        return f"; an Axolotl key, which vlm3 sets from {field}: set that instead (or override it under axolotl:)"
    if key in AXOLOTL_ONLY_KEYS:
        return f"; an Axolotl key: put it under axolotl: (axolotl: {{{key}: ...}}), the raw keys applied over the rendered config"
    return ""


def field_elsewhere(key: str, model: type[BaseModel] = None, prefix: str = "") -> list[str]:
    """Dotted recipe fields named `key` in any section ('gpu' -> ['compute.gpu', 'serve.gpu'])."""
    model = model or Recipe
    found = []
    for name, info in model.model_fields.items():
        if name == key and prefix:
            found.append(prefix + name)
        nested = nested_model(info.annotation)
        if nested is not None:
            found += field_elsewhere(key, nested, f"{prefix}{name}.")
    return found


def nested_model(annotation) -> type[BaseModel] | None:
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    return next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)


def suggest_key(loc: list[str]) -> str:
    """' (did you mean 'r'?)' for a misspelt key, searching the model that owns it; a key of another section or
    of Axolotl's config is sent where it belongs."""
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(part)
        nested = nested_model(getattr(field, "annotation", None))
        if nested is None:
            return ""
        model = nested
    key = loc[-1]
    if model is Recipe and key in RECIPE_FIELD:
        return axolotl_key_hint(key)
    elsewhere = [f for f in field_elsewhere(key) if f.rsplit(".", 1)[0] != ".".join(loc[:-1])]
    if elsewhere:
        return f" here (it belongs in {' or '.join(map(repr, elsewhere))})"
    if model is Recipe and key in AXOLOTL_ONLY_KEYS:
        return axolotl_key_hint(key)
    known = list(model.model_fields)
    hint = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if not hint:
        hint = [k for k in known if key.startswith(k) or k.startswith(key)][:1]
    return f" (did you mean {hint[0]!r}?)" if hint else f"; known keys: {', '.join(known)}"
