"""Throughput of the harness client (harness.generate.generate) against a server that answers at once.

Usage:
    .venv/bin/python bench/bench_client.py [--transport both|aiohttp|httpx] [--scale 1.0]

The loopback server (python -m bench.loopback_openai) runs in its own process so client and
server do not share a GIL. For each transport, image kind (a ~1 KB JPEG and a ~110 KB page
image) and concurrency (1, 8, 64), a fresh server answers three runs, each into a fresh
predictions.jsonl, and the median run is reported. A run's time is the whole generate() call:
prompt hashes, resume check, every request with its image, every record written. The result
is a markdown table, then what each client-side step costs per request (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import random
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script (make bench): the repository root is not on sys.path otherwise

import openai  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from harness.generate import GenerationSettings, build_messages, generate, prompt_hash  # noqa: E402
from data_adapters.samples import EvalSample  # noqa: E402

GOAL_RPS = 500  # at concurrency 64: far above what one vLLM server answers (~10 requests/s per H100)
DISTINCT_IMAGES = 16  # samples cycle over these, as questions share a manual's pages
SERVER_START_S = 30.0
WARMUP_REQUESTS = 200

# (image kind, concurrency, requests per run): under a minute in all on a 2-core machine, both transports.
PLAN = [
    ("small", 1, 250), ("small", 8, 1000), ("small", 64, 1000),
    ("page", 1, 100), ("page", 8, 400), ("page", 64, 400),
]
REPEATS = 3


@dataclass
class Result:
    transport: str
    image: str
    image_kb: float
    concurrency: int
    requests: int
    failed: int
    seconds: float
    cpu_ms_per_request: float
    server_connections: int

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds


def small_jpeg(seed: int) -> bytes:
    rng = random.Random(seed)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), tuple(rng.randrange(256) for _ in range(3))).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def page_jpeg(seed: int, width: int = 827, height: int = 1169) -> bytes:
    """An A4 page at 100 dpi with lines of word-like blocks: JPEG size close to a scanned manual page."""
    rng = random.Random(seed)
    page = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(page)
    margin, y = width // 12, width // 12
    while y < height - margin:
        x = margin
        while x < width - margin - 60:
            word = rng.randint(width // 60, width // 14)
            draw.rectangle([x, y, x + word, y + height // 120], fill=rng.randint(0, 60))
            x += word + width // 100
        y += rng.choice([height // 60] * 3 + [height // 30])
    buffer = io.BytesIO()
    page.convert("RGB").save(buffer, format="JPEG", quality=40)
    return buffer.getvalue()


def make_samples(folder: Path, kind: str, count: int) -> list[EvalSample]:
    render = small_jpeg if kind == "small" else page_jpeg
    images = []
    for seed in range(DISTINCT_IMAGES):
        path = folder / f"{kind}_{seed:02d}.jpg"
        if not path.exists():
            path.write_bytes(render(seed))
        images.append(path)
    return [
        EvalSample(id=f"bench:{i}", kind="val", image=str(images[i % len(images)]), image_ref=images[i % len(images)].name,
                   question=f"What is the torque for bolt {i}?", expected=None)
        for i in range(count)
    ]


class ServerProcess:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.loopback_openai", "--port", "0"], cwd=ROOT,
                                     stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], SERVER_START_S)
        line = self.proc.stdout.readline().strip() if ready else ""
        if not line.startswith("http://"):
            self.close()
            raise RuntimeError(f"loopback server did not start within {SERVER_START_S} s")
        self.base_url = line

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base_url.removesuffix("/v1") + "/stats", timeout=5) as response:
            return json.load(response)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def measure(server: ServerProcess, transport: str, kind: str, concurrency: int, count: int, folder: Path) -> Result:
    samples = make_samples(folder, kind, count)
    out = folder / f"predictions-{transport}-{kind}-{concurrency}.jsonl"
    out.unlink(missing_ok=True)
    settings = GenerationSettings(base_url=server.base_url, api_key="bench", model="bench-model",
                                  concurrency=concurrency, timeout_s=30, max_retries=0)
    connections_before = server.stats()["connections"]
    cpu_started = time.process_time()
    stats = asyncio.run(generate(samples, settings, out))
    cpu = time.process_time() - cpu_started
    image_kb = sum(Path(s.image).stat().st_size for s in samples[:DISTINCT_IMAGES]) / min(count, DISTINCT_IMAGES) / 1024
    return Result(transport, kind, image_kb, concurrency, stats.requested, stats.failed, stats.seconds,
                  cpu / max(stats.requested, 1) * 1000, server.stats()["connections"] - connections_before)


def median_run(transport: str, kind: str, concurrency: int, count: int, folder: Path) -> Result:
    """REPEATS runs against one fresh server; the median by requests/s (a shared 2-core box is noisy)."""
    with ServerProcess() as server:
        runs = [measure(server, transport, kind, concurrency, count, folder) for _ in range(REPEATS)]
    return sorted(runs, key=lambda r: r.requests_per_s)[len(runs) // 2]


AIOHTTP_CLIENT = getattr(openai, "DefaultAioHttpClient", None)


def aiohttp_available() -> bool:
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return False
    return AIOHTTP_CLIENT is not None


def use_transport(transport: str) -> None:
    """generate() takes aiohttp when openai offers it, else httpx: hiding it measures the httpx fallback."""
    if transport == "httpx":
        vars(openai).pop("DefaultAioHttpClient", None)
    elif AIOHTTP_CLIENT is not None:
        openai.DefaultAioHttpClient = AIOHTTP_CLIENT


def per_call_ms(fn, repeat: int = 300) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - started) / repeat * 1000


def breakdown(folder: Path) -> str:
    """What each client-side step costs per request, in ms: where the time of one request goes."""
    try:  # the openai client's own conversion of the request parameters; a private helper, so optional
        from openai._utils import async_maybe_transform
        from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
    except ImportError:
        async_maybe_transform = None
    settings = GenerationSettings(base_url="http://127.0.0.1:9/v1", api_key="bench", model="bench-model")
    rows: dict[str, list[float]] = {}
    for kind in ("small", "page"):
        sample = make_samples(folder, kind, 1)[0]
        body = {"messages": build_messages(sample), "model": settings.model, "temperature": 0.0, "max_tokens": settings.max_tokens}
        record = {"id": sample.id, "model": settings.model, "prompt_hash": "0" * 16, "answer": "x" * 200, "error": None,
                  "finish_reason": "stop", "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        with (folder / "breakdown.jsonl").open("a", encoding="utf-8") as out:
            def write_record():
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()

            steps = {
                "read image + base64 data URL (build_messages)": lambda: build_messages(sample),
                "prompt hash (read image + sha256)": lambda: prompt_hash(sample, settings),
                "append + flush the record (predictions.jsonl)": write_record,
                "request body to JSON (inside openai)": lambda: json.dumps(body),
            }
            if async_maybe_transform is not None:
                steps["parameter conversion (inside openai)"] = lambda: asyncio.run(
                    async_maybe_transform(body, CompletionCreateParamsNonStreaming))
            for name, step in steps.items():
                rows.setdefault(name, []).append(per_call_ms(step))
    if async_maybe_transform is not None:  # one event loop per call above: measure that alone and subtract it
        empty_loop = per_call_ms(lambda: asyncio.run(asyncio.sleep(0)))
        rows["parameter conversion (inside openai)"] = [max(0.0, ms - empty_loop) for ms in rows["parameter conversion (inside openai)"]]
    lines = ["| step, per request | small image ms | page image ms |", "|---|---:|---:|"]
    lines += [f"| {name} | {small:.3f} | {page:.3f} |" for name, (small, page) in rows.items()]
    return "\n".join(lines)


def table(results: list[Result]) -> str:
    lines = [
        "| transport | image | concurrency | requests | seconds | requests/s | client CPU ms/request | connections |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        failed = f" ({r.failed} failed)" if r.failed else ""
        lines.append(f"| {r.transport} | {r.image} ({r.image_kb:.0f} KB) | {r.concurrency} | {r.requests}{failed} | "
                     f"{r.seconds:.2f} | {r.requests_per_s:.0f} | {r.cpu_ms_per_request:.2f} | {r.server_connections} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/bench_client.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", choices=["both", "aiohttp", "httpx"], default="both",
                        help="HTTP transport under the openai client (aiohttp is what generate() uses when installed)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every request count (0.1 for a smoke run)")
    args = parser.parse_args(argv)

    transports = ["aiohttp", "httpx"] if args.transport == "both" else [args.transport]
    if "aiohttp" in transports and not aiohttp_available():
        print("aiohttp is not installed (openai[aiohttp]): measuring httpx only", file=sys.stderr)
        transports = ["httpx"]
    print(f"Python {platform.python_version()}, openai {openai.__version__}, {os.cpu_count()} CPUs, {platform.machine()}", flush=True)
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="vlm3-bench-") as tmp:
        for transport in transports:
            use_transport(transport)
            with ServerProcess() as server:  # first use imports and builds the client's lazy parts
                measure(server, transport, "small", 8, WARMUP_REQUESTS, Path(tmp))
            for kind, concurrency, count in PLAN:
                result = median_run(transport, kind, concurrency, max(1, round(count * args.scale)), Path(tmp))
                results.append(result)
                print(f"  {transport:8} {kind:5} concurrency {concurrency:3}: {result.requests_per_s:6.0f} requests/s", file=sys.stderr, flush=True)
        use_transport("aiohttp")
        steps = breakdown(Path(tmp))
    print(flush=True)
    print(table(results))
    print()
    print(steps)
    print()
    headline = [r for r in results if r.image == "small" and r.concurrency == 64]
    for r in headline:
        verdict = "meets" if r.requests_per_s >= GOAL_RPS and not r.failed else "misses"
        print(f"{r.transport}: {r.requests_per_s:.0f} requests/s at concurrency 64 {verdict} the goal of {GOAL_RPS}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0 if all(not r.failed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
