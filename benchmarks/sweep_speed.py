"""Wall time of 8 seeds of one config, three ways: one after another, 2 local workers, and
all 8 vmapped into one program — side by side in one run.

Each way is the real command, ``python launch.py --sweep ...`` in a fresh process and a
fresh sweep directory, so process start, data loading, compilation and evaluation all
count, as they do for a user:

- ``digits_lenet`` (scikit-learn's digits, 4 epochs): the ``digits_lr`` sweep's baseline
  point with 8 seeds;
- ``mnist_lenet`` shortened to 2 epochs: the ``pooling`` sweep's ``max`` point (the plain
  ``mnist_lenet`` network) with 8 seeds (needs MNIST: ``TFDS_DATA_DIR``);
- ``slot_cnn`` (12 k params, 2.7 MFLOPs per image) on 10,000 MNIST images for one epoch:
  the ``slot_conv`` sweep's baseline point;
- ``tf_tutorial_cnn`` (3.3 M params, 28 MFLOPs per image) on 5,000 MNIST images for one
  epoch: the ``dropout`` sweep's baseline point, a model where the step's arithmetic, not
  its overhead, dominates.

Usage::

  TFDS_DATA_DIR=../shared/tfds python benchmarks/sweep_speed.py [--only digits_lenet]

Prints one table row per (config, way) with the wall seconds and the ratio to the
sequential way, and checks that each seed's final test accuracy agrees across the ways.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = 8

CONFIGS = {
    "digits_lenet": ["--sweep", "digits_lr", "--sweep.only=0.001"],
    "mnist_lenet (2 epochs)": [
        "--sweep", "pooling", "--sweep.only=max",
        "--config.total_epochs=2", "--config.schedule.warmup_epochs=0.4",
    ],
    "slot_cnn (10,000 images, 1 epoch)": [
        "--sweep", "slot_conv", "--sweep.only=standard",
        "--config.dataset.train_split=train[:10000]",
        "--config.total_epochs=1", "--config.schedule.warmup_epochs=0.2",
    ],
    "tf_tutorial_cnn (5,000 images, 1 epoch)": [
        "--sweep", "dropout", "--sweep.only=0.5", "--config.dataset.train_split=train[:5000]",
        "--config.total_epochs=1", "--config.schedule.warmup_epochs=0.2",
    ],
}  # fmt: skip
WAYS = {
    "sequential": ["--sweep.vmap_seeds=false"],
    "2 workers": ["--sweep.vmap_seeds=false", "--workers", "2"],
    "vmapped": ["--sweep.vmap_seeds=true"],
}


def run(config: list[str], way: list[str], workdir: Path) -> float:
    command = [sys.executable, str(ROOT / "launch.py"), *config, f"--sweep.seeds={SEEDS}",
               "--workdir", str(workdir), *way]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return seconds


def accuracies(workdir: Path) -> list[float]:
    (point,) = [p for p in workdir.iterdir() if p.is_dir()]
    return [
        json.loads((point / f"seed-{k}" / "summary.json").read_text())["final_test_accuracy"]
        for k in range(SEEDS)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[c.split()[0] for c in CONFIGS])
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print("| config | way | wall s | vs sequential | mean final test accuracy |")
    print("|---|---|---:|---:|---:|")
    for name, config in CONFIGS.items():
        if args.only and not name.startswith(args.only):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            seconds, results = {}, {}
            for way, flags in WAYS.items():
                workdir = Path(tmp) / way.replace(" ", "_")
                seconds[way] = run(config, flags, workdir)
                results[way] = accuracies(workdir)
                ratio = seconds["sequential"] / seconds[way]
                mean = 100 * sum(results[way]) / SEEDS
                print(f"| {name} | {way} | {seconds[way]:.1f} | {ratio:.2f}x | {mean:.2f} % |",
                      flush=True)  # fmt: skip
            worst = max(
                abs(a - b)
                for way in WAYS
                for a, b in zip(results[way], results["sequential"], strict=True)
            )
            print(f"|  | largest per-seed accuracy difference to sequential: {worst:.2e} | | | |")


if __name__ == "__main__":
    main()
