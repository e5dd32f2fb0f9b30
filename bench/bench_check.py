"""Benchmark `vlm3 check` on a generated dataset: 50,000 rows over 5,000 page images.

Usage:
    .venv/bin/python bench/bench_check.py [--rows 50000] [--images 5000] [--dir /tmp/vlm3-bench-check]
    /usr/bin/time -v .venv/bin/vlm3 check /tmp/vlm3-bench-check/recipe.yaml --out /tmp/vlm3-bench-check/out

The first call generates the dataset (cached in --dir), then times `vlm3 check` as a whole
process under /usr/bin/time -v: wall seconds, rows per second and peak memory. Each image is
read for its header only (no full decode), so the cost is opening 5,000 files, not decoding them.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PAGE_SIZES = [(1700, 2200), (1654, 2339), (2480, 3508), (1275, 1650)]  # letter and A4 scans at 150-300 dpi


def build(directory: Path, rows: int, images: int) -> Path:
    data = directory / "training_data"
    marker = directory / f"built-{rows}-{images}"
    recipe = directory / "recipe.yaml"
    if marker.exists():
        return recipe
    (data / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for i in range(images):
        path = data / "images" / f"{i:05d}.jpg"
        if not path.exists():
            Image.new("L", PAGE_SIZES[i % len(PAGE_SIZES)], 255).save(path, quality=60)
    val_pages = set(range(0, images, 10))  # every 10th page is validation: no leakage
    with (data / "vlm_train.jsonl").open("w") as train, (data / "vlm_val.jsonl").open("w") as val:
        for n in range(rows):
            page = n % images
            row = {
                "image": f"images/{page:05d}.jpg",
                "conversations": [
                    {"role": "user", "content": f"What is the tightening torque for bolt {n} on this page?"},
                    {"role": "assistant", "content": f"Tighten bolt {n} to {rng.randint(5, 120)} Nm ({rng.randint(4, 90)} ft-lb), then a further {rng.choice([30, 45, 90])} degrees."},
                ],
                "metadata": {"content_type": "specification", "section": f"{11 + page % 20} Section", "page": f"{page:05d}"},
            }
            (val if page in val_pages else train).write(json.dumps(row) + "\n")
    recipe.write_text(
        "name: bench-check\n"
        f"data: {{train: {data}/vlm_train.jsonl, val: {data}/vlm_val.jsonl, images_root: {data}, probes: null}}\n"
    )
    marker.touch()
    return recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/vlm3-bench-check"))
    args = parser.parse_args()
    recipe = build(args.dir, args.rows, args.images)
    vlm3 = Path(sys.executable).parent / "vlm3"
    proc = subprocess.run(["/usr/bin/time", "-v", str(vlm3), "check", str(recipe), "--out", str(args.dir / "out"), "--show", "0"],
                          capture_output=True, text=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    seconds = (int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))) if wall else float("nan")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    print(proc.stdout.strip().splitlines()[0])
    print(f"| rows | images | wall (s) | rows/s | peak RSS (MB) | exit |\n|---:|---:|---:|---:|---:|---:|\n"
          f"| {args.rows:,} | {args.images:,} | {seconds:.1f} | {args.rows / seconds:,.0f} | {peak_kb / 1024:.0f} | {proc.returncode} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
