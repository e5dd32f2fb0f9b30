#!/usr/bin/env bash
# The prepared GPU check (issue 22, item 5): bench/gpu_check.py's stages, one JSON and one log in $OUT.
#
#   bash bench/gpu_check.sh --prepare     # here, once (network): the wheels the device image lacks, into .whl/gpu_check
#   bash bench/gpu_check.sh               # on one H100 with no network; the device tool's call:
#                                         #   run(command="bash bench/gpu_check.sh", carry=[".whl/gpu_check"], timeout_s=570)
#   bash bench/gpu_check.sh --cpu-smoke   # the same stages at toy size on a CPU (PYTHON=.venv-train/bin/python)
#
# Output: $OUT/gpu_check.json and $OUT/gpu_check.log ($OUT unset: ./gpu_check_out). PYTHON picks the
# interpreter (default python3: on the device image the one that holds torch). The stages stop inside
# 510 s by their own limits; `timeout` below is the outer bound (525 s + 10 s to kill: under 9 minutes).
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if [ "${1:-}" = "--prepare" ]; then
    # The device image has Python 3.12 on x86-64; pins as in the trainer environment (bench/gpu_check.py CARRIED).
    mkdir -p .whl/gpu_check
    reqs=$("$PY" -c 'import sys; sys.path.insert(0, "bench"); import gpu_check; print(" ".join(gpu_check.CARRIED))') || exit 1
    exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl/gpu_check $reqs
fi

OUT="${OUT:-./gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
exec timeout -k 10 525 "$PY" bench/gpu_check.py --out "$OUT" "$@"
