"""Mixed precision on ``mnist_lenet``: final test accuracy and speed per compute dtype.

    TFDS_DATA_DIR=../shared/tfds python benchmarks/precision.py [--dtypes float32,bfloat16]
        [--seeds 0,1] [--epochs N]

Each (dtype, seed) is the experiment as shipped (``--config.dtype`` and ``--config.seed``
changed, nothing else) through ``train_and_evaluate``, one after another in this process,
each in a fresh temporary work directory. Accuracy and images/s are those of its
``summary.json`` (images/s: steady state, compilation excluded); skipped steps are
those of its ``metrics.jsonl`` (with float16, the steps the loss scale skipped). The
target of issue 10: bfloat16's final test accuracy within 0.2 % (percentage points) of
float32's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_GAP = 0.002


def run(dtype: str, seed: int, epochs: int | None) -> dict:
    from cnnjax.training import apply_overrides, load_experiment, train_and_evaluate

    config = load_experiment("mnist_lenet", ROOT / "experiments")
    overrides = [f"--config.dtype={dtype}", f"--config.seed={seed}"]
    if epochs is not None:
        overrides.append(f"--config.total_epochs={epochs}")
    apply_overrides(config, overrides)
    with tempfile.TemporaryDirectory() as workdir:
        summary = train_and_evaluate(config, Path(workdir))
        records = (Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return {
        "dtype": dtype,
        "seed": seed,
        "accuracy": summary["final_test_accuracy"],
        "images_per_second": summary["train_images_per_second"],
        "seconds": summary["train_seconds"],
        "skipped": sum(json.loads(line)["skipped_steps"] for line in records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=None, help="default: the experiment's")
    args = parser.parse_args()
    dtypes = args.dtypes.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]

    rows = [run(dtype, seed, args.epochs) for seed in seeds for dtype in dtypes]

    print("\n| dtype | seed | final test accuracy | images/s | train s | skipped steps |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['seed']} | {100 * r['accuracy']:.2f} % "
            f"| {r['images_per_second']:,.0f} | {r['seconds']:.1f} | {r['skipped']} |"
        )
    mean = {d: statistics.mean(r["accuracy"] for r in rows if r["dtype"] == d) for d in dtypes}
    speed = {
        d: statistics.median(r["images_per_second"] for r in rows if r["dtype"] == d)
        for d in dtypes
    }
    print()
    for d in dtypes:
        line = f"{d}: mean final test accuracy {100 * mean[d]:.2f} %, {speed[d]:,.0f} images/s"
        if d != "float32" and "float32" in mean:
            gap = mean[d] - mean["float32"]
            verdict = "within" if abs(gap) <= TARGET_GAP else "NOT within"
            line += (
                f"; {100 * gap:+.2f} % against float32 ({verdict} {100 * TARGET_GAP:.1f} %), "
                f"{speed[d] / speed['float32']:.2f}x its images/s"
            )
        print(line)


if __name__ == "__main__":
    main()
