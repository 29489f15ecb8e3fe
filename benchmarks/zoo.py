"""Train every MNIST experiment of the model zoo on real MNIST and print the README table.

    TFDS_DATA_DIR=../shared/tfds python benchmarks/zoo.py [--exp NAME ...] [--workdir runs/zoo]
    python benchmarks/zoo.py --table_only --workdir runs/zoo     # the table of finished runs

Each experiment runs as ``python launch.py --exp NAME --workdir WORKDIR/NAME`` with its
default config (one after another, so runs do not share the CPU), its output going to
``WORKDIR/NAME.log``. The table lists, from each run's ``summary.json`` and the model
table the trainer prints at start: parameters, forward MFLOPs per example, epochs, the
final test metric (accuracy, or PSNR for the autoencoder), the wall seconds of training
(compilation and evaluations included), steady-state images/s, the process's peak resident
memory and the seconds until the experiment's target was first reached. A run that is
already finished in WORKDIR is not repeated; delete its directory to measure it again.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The MNIST experiments of the zoo, in the README's order.
EXPERIMENTS = (
    "mnist_lenet",
    "mnist_lenet_classic",
    "mnist_tf_tutorial_cnn",
    "mnist_keras_book_cnn",
    "mnist_nin",
    "mnist_inception",
    "mnist_alexnet",
    "mnist_mobilenet",
    "mnist_dilated",
    "mnist_deformable",
    "mnist_deformable_plain",
    "mnist_slot_cnn",
    "mnist_autoencoder",
    "mnist_conv1d_seq",
    "mnist_tcn",
    "mnist_clips",
)


def run(name: str, workdir: Path) -> None:
    """Trains ``name`` into ``workdir/name`` unless it has finished there already."""
    if (workdir / name / "summary.json").exists():
        return
    log = workdir / f"{name}.log"
    print(f"training {name} (log: {log})", file=sys.stderr, flush=True)
    command = [sys.executable, str(ROOT / "launch.py"), "--exp", name,
               "--workdir", str(workdir / name)]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        # wait4: the resource usage of this child alone (launch.py re-execs in place).
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    (workdir / f"{name}.rss").write_text(f"{usage.ru_maxrss * 1024}\n")  # bytes


def row(name: str, workdir: Path) -> str:
    s = json.loads((workdir / name / "summary.json").read_text())
    log = (workdir / f"{name}.log").read_text()
    mflops = re.search(r"Total: [\d,]+ params, ([\d.]+) MFLOPs", log).group(1)
    metric = s["metric"]
    final = s[f"final_test_{metric}"]
    value = f"{100 * final:.2f} %" if metric == "accuracy" else f"{final:.2f} dB PSNR"
    target = s[f"target_{metric}"]
    reached = s["seconds_to_target"]
    shown_target = f"{100 * target:g} %" if metric == "accuracy" else f"{target:g} dB"
    to_target = f"{reached:.0f} s to {shown_target}" if reached is not None else "not reached"
    rss = workdir / f"{name}.rss"
    peak = f"{int(rss.read_text()) / 2**30:.1f} GiB" if rss.exists() else "?"
    return (
        f"| `{name}` | {s['params']:,} | {mflops} | {s['epochs']} | {value} | "
        f"{s['train_seconds']:.0f} s | {s['train_images_per_second']:,.0f} | {peak} | "
        f"{to_target} |"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exp", nargs="*", default=list(EXPERIMENTS))
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "zoo")
    parser.add_argument("--table_only", action="store_true", help="print, train nothing")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    lines = [
        "| experiment | params | MFLOPs | epochs | final test | train time | images/s | "
        "peak RSS | target |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in args.exp:
        if not args.table_only:
            run(name, args.workdir)
        if (args.workdir / name / "summary.json").exists():
            lines.append(row(name, args.workdir))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
