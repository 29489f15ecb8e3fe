"""``mnist_lenet`` on 1, 2 and 8 simulated CPU devices, and in bfloat16: the cost of
sharding at equal cores, side by side in one run.

    TFDS_DATA_DIR=../shared/tfds python benchmarks/scale_speed.py [--epochs 2] [--devices 1,2,8]

Each run is ``launch.py --exp mnist_lenet`` in a fresh process with
``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N devices sharing the same cores:
this measures what splitting the batch over devices costs, not what more hardware buys),
replicated parameters, then FSDP on the largest device count. Prints one row per run:
steady-state train images/s from ``summary.json`` (compilation left out), wall seconds,
final test accuracy, and images/s relative to one device. Each run has a hard timeout, so
a collective that never completes shows as a row, not as a hang.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 1200


def run(devices: int, epochs: int, workdir: Path, *flags: str) -> dict | str:
    """The run's summary, or why it has none."""
    command = [sys.executable, str(ROOT / "launch.py"), "--exp", "mnist_lenet",
               f"--config.total_epochs={epochs}", "--workdir", str(workdir), *flags]  # fmt: skip
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    start = time.perf_counter()
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return f"no result after {TIMEOUT} s (hung)"
    if result.returncode != 0:
        return f"exit {result.returncode}: {result.stderr.strip().splitlines()[-1]}"
    summary = json.loads((workdir / "summary.json").read_text())
    summary["wall_seconds"] = time.perf_counter() - start
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--devices", default="1,2,8", help="comma-separated device counts")
    args = parser.parse_args()
    counts = [int(n) for n in args.devices.split(",")]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}; mnist_lenet, {args.epochs} epochs")  # fmt: skip
    print("| devices | params | dtype | images/s | vs 1 device | wall s | test accuracy |")
    print("|---:|---|---|---:|---:|---:|---:|")
    cases = [(n, "replicate", "float32") for n in counts]
    cases += [(max(counts), "fsdp", "float32"), (1, "replicate", "bfloat16")]
    base = None
    with tempfile.TemporaryDirectory() as tmp:
        for k, (devices, params, dtype) in enumerate(cases):
            flags = (f"--config.sharding.params={params}", f"--config.dtype={dtype}")
            summary = run(devices, args.epochs, Path(tmp) / str(k), *flags)
            if isinstance(summary, str):
                print(f"| {devices} | {params} | {dtype} | {summary} | | | |", flush=True)
                continue
            speed = summary["train_images_per_second"]
            base = base or speed
            print(f"| {devices} | {params} | {dtype} | {speed:,.0f} | {speed / base:.2f}x | "
                  f"{summary['wall_seconds']:.1f} | "
                  f"{100 * summary['final_test_accuracy']:.2f} % |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
