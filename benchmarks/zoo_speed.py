"""Training speed of every MNIST experiment of the zoo next to an eager PyTorch twin, side by side.

    TFDS_DATA_DIR=../shared/tfds python benchmarks/zoo_speed.py [--only NAME[,NAME]]
        [--steps 20] [--repeats 5] [--rounds 1] [--torch_allocator]

For each ``experiments/mnist_*.py`` (in ``benchmarks/zoo.py``'s order), two measurements,
each in its own subprocess and one after the other (so they never share the CPU):

1. **cnnjax**: the experiment's own config (batch size, ``microbatches``,
   ``steps_per_call``, augmentation) through ``train_and_evaluate``, what ``launch.py``
   calls, on the first ``steps * batch_size`` training images, for ``repeats + 1`` epochs
   of ``steps`` steps (rounded up to whole train calls). Each epoch's steady-state
   images/s is the trainer's own (``steady_images / steady_seconds`` in
   ``metrics.jsonl``: compiling calls left out); the first epoch is the warm-up, the
   figure is the median of the others. Evaluation runs on 1,000 test images, outside the
   timed train calls; checkpoints are written only at the end.
2. **PyTorch eager twin**, written here: the same layers and parameter count (checked
   against the cnnjax model; a mismatch stops the run), NCHW, batch 128, Adam,
   ``torch.set_num_threads(2)``, the train step only (``zero_grad``, forward, loss,
   ``backward``, ``step``) on batches indexed from a fixed tensor of random inputs, so it
   pays nothing for data or augmentation; ``steps`` warm-up steps, then the median
   images/s of ``repeats`` timed runs of ``steps`` steps.

The ratio is cnnjax / PyTorch images/s. With ``--rounds R`` the whole table is measured
R times, interleaved, and each cell is the median over rounds. cnnjax runs on the C
allocator ``launch.py`` chooses (:mod:`cnnjax.host_memory`: jemalloc where one is
installed), PyTorch on the one of the environment it is given, unless
``--torch_allocator`` gives it cnnjax's too. The twins compute what the
cnnjax models compute up to initialisation and the placement of odd SAME padding
(PyTorch pads symmetrically); their cost is the same.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from zoo import EXPERIMENTS as ZOO  # noqa: E402

from cnnjax import host_memory  # noqa: E402

# Every MNIST experiment: the README's order, then any the zoo table does not list.
EXPERIMENTS = (
    *ZOO,
    *sorted({p.stem for p in (ROOT / "experiments").glob("mnist_*.py")} - set(ZOO)),
)

TORCH_BATCH = 128
TORCH_THREADS = 2


# ---------------------------------------------------------------------------------- cnnjax


def cnnjax_run(name: str, steps: int, repeats: int) -> dict:
    """Steady-state train images/s of experiment ``name`` through the trainer."""
    import contextlib
    import io

    from cnnjax.training import load_experiment, train_and_evaluate

    config = load_experiment(name, ROOT / "experiments")
    per_call = config.steps_per_call
    steps = per_call * math.ceil(steps / per_call)
    config.dataset.train_split = f"train[:{steps * config.batch_size}]"
    config.dataset.test_split = "test[:1000]"
    config.total_epochs = repeats + 1
    config.checkpoint.every_epochs = repeats + 2  # only the final save, after the timing
    with tempfile.TemporaryDirectory() as workdir, contextlib.redirect_stdout(io.StringIO()):
        summary = train_and_evaluate(config, workdir)
        records = [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").open()]
    rates = [r["steady_images"] / r["steady_seconds"] for r in records[1:]]
    return {
        "images_per_second": statistics.median(rates),
        "params": summary["params"],
        "batch_size": config.batch_size,
        "microbatches": config.microbatches,
        "steps_per_call": per_call,
    }


# ---------------------------------------------------------------------------------- twins


def _twins():
    """``{experiment: (build() -> torch module, input shape without batch, loss)}``."""
    import numpy as np
    import torch
    import torch.nn.functional as F  # noqa: N812
    from torch import nn

    class Lambda(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    relu = nn.ReLU
    flat = nn.Flatten

    def lenet():
        return nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2), nn.MaxPool2d(2), relu(),
            nn.Conv2d(6, 16, 5), nn.MaxPool2d(2), relu(), flat(),
            nn.Linear(400, 120), relu(), nn.Linear(120, 84), relu(), nn.Linear(84, 10),
        )  # fmt: skip

    def scaled_tanh():
        return Lambda(lambda x: 1.7159 * torch.tanh(x * (2.0 / 3.0)))

    class Subsampling(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.coefficient = nn.Parameter(torch.full((c,), 0.25))
            self.bias = nn.Parameter(torch.zeros(c))

        def forward(self, x):
            y = F.avg_pool2d(x, 2) * (4 * self.coefficient)[:, None, None]
            return y + self.bias[:, None, None]

    class ConnectionTableConv(nn.Module):
        def __init__(self, table):
            super().__init__()
            mask = np.array([[ch == "X" for ch in row] for row in table])
            rows, cols = np.nonzero(mask)
            placement = np.zeros((len(rows), *mask.shape), np.float32)
            placement[np.arange(len(rows)), rows, cols] = 1
            self.register_buffer("placement", torch.from_numpy(placement))
            self.kernel = nn.Parameter(torch.randn(len(rows), 5, 5) * 0.1)
            self.bias = nn.Parameter(torch.zeros(mask.shape[1]))

        def forward(self, x):
            full = torch.einsum("khw,kio->oihw", self.kernel, self.placement)
            return F.conv2d(x, full, self.bias)

    def lenet_classic():
        from cnnjax.models.lenet_classic import TABLE_I

        return nn.Sequential(
            nn.Conv2d(1, 6, 5), scaled_tanh(), Subsampling(6), scaled_tanh(),
            ConnectionTableConv(TABLE_I), scaled_tanh(), Subsampling(16), scaled_tanh(),
            nn.Conv2d(16, 120, 5), scaled_tanh(), flat(),
            nn.Linear(120, 84), scaled_tanh(), nn.Linear(84, 10),
        )  # fmt: skip

    def tf_tutorial():
        return nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2), relu(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5, padding=2), relu(), nn.MaxPool2d(2), flat(),
            nn.Linear(3136, 1024), relu(), nn.Dropout(0.5), nn.Linear(1024, 10),
        )  # fmt: skip

    def keras_book():
        return nn.Sequential(
            nn.Conv2d(1, 32, 3), relu(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), relu(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3), relu(), flat(),
            nn.Linear(576, 64), relu(), nn.Linear(64, 10),
        )  # fmt: skip

    def conv_relu(c_in, c_out, k, **kw):
        return [nn.Conv2d(c_in, c_out, k, padding=k // 2, **kw), relu()]

    def gap():
        return Lambda(lambda x: x.mean(dim=tuple(range(2, x.dim()))))

    def nin():
        def mlpconv(c_in, k, c, c_out, relu_last=True):
            layers = [*conv_relu(c_in, c, k), *conv_relu(c, c, 1), nn.Conv2d(c, c_out, 1)]
            return layers + [relu()] if relu_last else layers

        def pool_drop():
            return [nn.MaxPool2d(3, 2, padding=1), nn.Dropout(0.5)]

        return nn.Sequential(
            *mlpconv(1, 5, 32, 32), *pool_drop(), *mlpconv(32, 5, 64, 64), *pool_drop(),
            *mlpconv(64, 3, 64, 10, relu_last=False), gap(),
        )  # fmt: skip

    class Inception(nn.Module):
        def __init__(self, c_in, c1, c3r, c3, c5r, c5, pp):
            super().__init__()
            self.b1 = nn.Sequential(*conv_relu(c_in, c1, 1))
            self.b3 = nn.Sequential(*conv_relu(c_in, c3r, 1), *conv_relu(c3r, c3, 3))
            self.b5 = nn.Sequential(*conv_relu(c_in, c5r, 1), *conv_relu(c5r, c5, 5))
            self.bp = nn.Sequential(nn.MaxPool2d(3, 1, padding=1), *conv_relu(c_in, pp, 1))
            self.out = c1 + c3 + c5 + pp

        def forward(self, x):
            return torch.cat([self.b1(x), self.b3(x), self.b5(x), self.bp(x)], 1)

    def inception():
        from cnnjax.models.inception import INCEPTION_3A, INCEPTION_3B, INCEPTION_4A

        a = Inception(48, *INCEPTION_3A)
        b = Inception(a.out, *INCEPTION_3B)
        c = Inception(b.out, *INCEPTION_4A)
        return nn.Sequential(
            *conv_relu(1, 48, 3), nn.MaxPool2d(3, 2, padding=1), a, b,
            nn.MaxPool2d(3, 2, padding=1), c, gap(), nn.Dropout(0.4), nn.Linear(c.out, 10),
        )  # fmt: skip

    def alexnet():
        w = (24, 64, 96, 96, 64)  # experiments/mnist_alexnet.py
        pool = lambda: nn.MaxPool2d(3, 2, padding=1)  # noqa: E731
        return nn.Sequential(
            *conv_relu(1, w[0], 5), pool(), *conv_relu(w[0], w[1], 5, groups=2), pool(),
            *conv_relu(w[1], w[2], 3), *conv_relu(w[2], w[3], 3, groups=2),
            *conv_relu(w[3], w[4], 3, groups=2), pool(), flat(),
            nn.Linear(16 * w[4], 256), relu(), nn.Dropout(0.5),
            nn.Linear(256, 256), relu(), nn.Dropout(0.5), nn.Linear(256, 10),
        )  # fmt: skip

    def mobilenet():
        def bn_relu(c):
            return [nn.BatchNorm2d(c), relu()]

        layers = [nn.Conv2d(1, 32, 3, padding=1, bias=False), *bn_relu(32)]
        c = 32
        for features, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)):
            layers += [nn.Conv2d(c, c, 3, stride, padding=1, groups=c, bias=False), *bn_relu(c)]
            layers += [nn.Conv2d(c, features, 1, bias=False), *bn_relu(features)]
            c = features
        return nn.Sequential(*layers, gap(), nn.Linear(c, 10))

    def dilated():
        layers, c = [], 1
        for d in (1, 2, 4, 8):
            layers += [nn.Conv2d(c, 32, 3, padding=d, dilation=d), relu()]
            c = 32
        return nn.Sequential(*layers, gap(), nn.Linear(32, 10))

    class DeformableConv(nn.Module):
        """torchvision's ``deform_conv2d`` v2 (3x3, SAME) through ``grid_sample``."""

        def __init__(self, c_in, c_out):
            super().__init__()
            self.offset_conv = nn.Conv2d(c_in, 27, 3, padding=1)
            self.weight = nn.Parameter(torch.randn(c_out, c_in * 9) * 0.05)
            self.bias = nn.Parameter(torch.zeros(c_out))

        def forward(self, x):
            n, c, h, w = x.shape
            predicted = self.offset_conv(x)
            offsets = predicted[:, :18].reshape(n, 9, 2, h, w)
            mask = 2 * torch.sigmoid(predicted[:, 18:])
            ty, tx = torch.meshgrid(torch.arange(3.0) - 1, torch.arange(3.0) - 1, indexing="ij")
            gy, gx = torch.meshgrid(torch.arange(h * 1.0), torch.arange(w * 1.0), indexing="ij")
            y = gy + ty.reshape(9, 1, 1) + offsets[:, :, 0]  # (N, 9, H, W)
            xx = gx + tx.reshape(9, 1, 1) + offsets[:, :, 1]
            grid = torch.stack([2 * xx / (w - 1) - 1, 2 * y / (h - 1) - 1], -1)
            samples = (
                F.grid_sample(
                    x, grid.reshape(n, 9 * h, w, 2), align_corners=True, padding_mode="zeros"
                ).reshape(n, c, 9, h, w)
                * mask[:, None]
            )
            out = torch.einsum("nkhw,ok->nohw", samples.reshape(n, c * 9, h, w), self.weight)
            return out + self.bias[:, None, None]

    def slot(deformable):
        convs = (DeformableConv(32, 16), DeformableConv(16, 16)) if deformable else (
            nn.Conv2d(32, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1))  # fmt: skip
        return nn.Sequential(
            *conv_relu(1, 16, 3), nn.MaxPool2d(2), *conv_relu(16, 32, 3), nn.MaxPool2d(2),
            convs[0], relu(), convs[1], relu(), gap(), nn.Linear(16, 10),
        )  # fmt: skip

    def autoencoder():
        up = lambda a, b: nn.ConvTranspose2d(a, b, 3, 2, padding=1, output_padding=1)  # noqa: E731
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, 2, padding=1), relu(), nn.Conv2d(32, 64, 3, 2, padding=1), relu(),
            nn.Conv2d(64, 8, 3, padding=1), up(8, 64), relu(), *conv_relu(64, 32, 3), up(32, 1),
        )  # fmt: skip

    def conv1d_seq():
        return nn.Sequential(
            Lambda(lambda x: x.reshape(x.shape[0], 28, 28).transpose(1, 2)),  # rows: (N, W, H)
            nn.Conv1d(28, 32, 5, padding=2), relu(), nn.MaxPool1d(2),
            nn.Conv1d(32, 64, 5, padding=2), relu(), nn.MaxPool1d(2),
            nn.Conv1d(64, 128, 5, padding=2), relu(), flat(), nn.Linear(7 * 128, 10),
        )  # fmt: skip

    class TCNBlock(nn.Module):
        def __init__(self, c_in, c_out, d):
            super().__init__()
            self.d = d
            self.conv = nn.Conv1d(c_in, c_out, 2, dilation=d)
            self.skip = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else None

        def forward(self, h):
            y = self.conv(F.pad(h, (self.d, 0)))  # causal: d (k - 1) steps on the left
            return F.relu(y + (h if self.skip is None else self.skip(h)))

    def tcn():
        blocks = [TCNBlock(1 if i == 0 else 16, 16, 2**i) for i in range(10)]
        return nn.Sequential(
            Lambda(lambda x: x.reshape(x.shape[0], 1, 784)), *blocks,
            Lambda(lambda h: h[:, :, -1]), nn.Linear(16, 10),
        )  # fmt: skip

    def clips():
        return nn.Sequential(
            nn.Conv3d(1, 8, 3, 2, padding=1), relu(), nn.MaxPool3d(2),
            nn.Conv3d(8, 16, 3, padding=1), relu(), nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(16, 32, 3, padding=1), relu(), flat(), nn.Linear(1024, 10),
        )  # fmt: skip

    image, padded = (1, 28, 28), (1, 32, 32)
    ce, mse = "cross_entropy", "reconstruction"
    return {
        "mnist_lenet": (lenet, image, ce),
        "mnist_lenet_classic": (lenet_classic, padded, ce),
        "mnist_tf_tutorial_cnn": (tf_tutorial, image, ce),
        "mnist_keras_book_cnn": (keras_book, image, ce),
        "mnist_nin": (nin, image, ce),
        "mnist_inception": (inception, image, ce),
        "mnist_alexnet": (alexnet, padded, ce),
        "mnist_mobilenet": (mobilenet, image, ce),
        "mnist_dilated": (dilated, image, ce),
        "mnist_deformable": (lambda: slot(True), image, ce),
        "mnist_deformable_plain": (lambda: slot(False), image, ce),
        "mnist_slot_cnn": (lambda: slot(False), image, ce),
        "mnist_autoencoder": (autoencoder, image, mse),
        "mnist_conv1d_seq": (conv1d_seq, image, ce),
        "mnist_tcn": (tcn, image, ce),
        "mnist_clips": (clips, (1, 8, 32, 32), ce),
    }


def torch_run(name: str, steps: int, repeats: int) -> dict:
    """Median train images/s of ``name``'s PyTorch twin over ``repeats`` runs of ``steps``."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(0)
    build, shape, loss_kind = _twins()[name]
    model = build()
    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    pool = 4  # distinct batches, indexed like an in-memory dataset
    x_all = torch.randn(pool * TORCH_BATCH, *shape)
    y_all = torch.randint(0, 10, (pool * TORCH_BATCH,))

    def step(i):
        lo = (i % pool) * TORCH_BATCH
        x, y = x_all[lo : lo + TORCH_BATCH], y_all[lo : lo + TORCH_BATCH]
        opt.zero_grad()
        out = model(x)
        loss = F.mse_loss(out, x) if loss_kind == "reconstruction" else F.cross_entropy(out, y)
        loss.backward()
        opt.step()

    for i in range(steps):
        step(i)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(steps):
            step(i)
        rates.append(steps * TORCH_BATCH / (time.perf_counter() - t0))
    return {
        "images_per_second": statistics.median(rates),
        "params": sum(p.numel() for p in model.parameters()),
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
    }


# ---------------------------------------------------------------------------------- driver


def check_params(names: list[str]) -> list[str]:
    """The experiments in ``names`` whose twin's parameter count differs from cnnjax's."""
    import jax
    import jax.numpy as jnp

    from cnnjax import models
    from cnnjax.training import load_experiment

    twins, bad = _twins(), []
    for name in names:
        build, shape, _ = twins[name]
        kwargs = load_experiment(name, ROOT / "experiments").model
        model = models.get(kwargs.name, **kwargs.kwargs.to_dict())
        x = jnp.zeros((1, *shape[1:], shape[0]))  # NCHW -> NHWC
        params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
        ours = sum(math.prod(a.shape) for a in jax.tree.leaves(params))
        theirs = sum(p.numel() for p in build().parameters())
        if ours != theirs:
            bad.append(f"{name}: cnnjax {ours:,}, PyTorch twin {theirs:,}")
    return bad


def _in_subprocess(
    which: str, name: str, steps: int, repeats: int, torch_allocator: bool
) -> dict | None:
    """``which``'s figures for ``name`` from a fresh interpreter; None (and its error on
    stderr) if it failed. cnnjax's process gets the environment ``launch.py`` runs in
    (its allocator, :mod:`cnnjax.host_memory`); PyTorch's the one it was given, or with
    ``torch_allocator`` cnnjax's."""
    same = which == "cnnjax" or torch_allocator
    env = host_memory.environment(os.environ) if same else os.environ
    done = subprocess.run(
        [sys.executable, __file__, "--_run", which, "--only", name,
         "--steps", str(steps), "--repeats", str(repeats)],
        capture_output=True, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    if done.returncode:
        print(f"{which} {name} failed:\n{done.stderr[-3000:]}", file=sys.stderr, flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def _row(name: str, jx: list[dict], pt: list[dict]) -> str:
    """The table row of ``name`` from its cnnjax and PyTorch figures of every round."""
    if not jx or not pt:
        return f"| {name} | failed (see stderr) | | | | |"
    a = statistics.median(r["images_per_second"] for r in jx)
    b = statistics.median(r["images_per_second"] for r in pt)
    parts = jx[0]["microbatches"]
    batch = f"{jx[0]['batch_size']}" + (f" ({parts} parts)" if parts > 1 else "")
    return f"| {name} | {jx[0]['params']:,} | {batch} | {a:,.0f} | {b:,.0f} | {a / b:.2f}x |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated experiments (default: all)")
    p.add_argument("--steps", type=int, default=20, help="train steps per timed run")
    p.add_argument("--repeats", type=int, default=5, help="timed runs after the warm-up")
    p.add_argument("--rounds", type=int, default=1, help="measure the table this many times")
    p.add_argument(
        "--torch_allocator",
        action="store_true",
        help="run the PyTorch twins on cnnjax's C allocator too (default: the environment's)",
    )
    p.add_argument("--_run", help=argparse.SUPPRESS)
    args = p.parse_args()
    names = [n if n.startswith("mnist_") else f"mnist_{n}" for n in args.only.split(",") if n]
    names = names or list(EXPERIMENTS)
    unknown = sorted(set(names) - set(EXPERIMENTS))
    if unknown:
        p.error(f"unknown experiments {unknown}; known: {', '.join(EXPERIMENTS)}")
    if args._run:
        fn = {"cnnjax": cnnjax_run, "torch": torch_run}[args._run]
        print(json.dumps(fn(names[0], args.steps, args.repeats)))
        return

    import jax

    mismatched = check_params(names)
    if mismatched:
        sys.exit("parameter counts differ: " + "; ".join(mismatched))
    load_before = os.getloadavg()[0]
    results = {n: {"cnnjax": [], "torch": []} for n in names}
    for r in range(args.rounds):
        for name in names:
            for which in ("cnnjax", "torch"):
                got = _in_subprocess(which, name, args.steps, args.repeats, args.torch_allocator)
                if got is not None:
                    results[name][which].append(got)
            row = _row(name, results[name]["cnnjax"], results[name]["torch"])
            print(f"round {r + 1}/{args.rounds}: {row}", file=sys.stderr, flush=True)
    torch_rows = [r for n in names for r in results[n]["torch"]]
    torch_info = f"{torch_rows[0]['version']}, {torch_rows[0]['threads']}" if torch_rows else "?"
    print(
        f"Train images/s on {jax.devices()[0].device_kind} ({os.cpu_count()} cores), "
        f"jax {jax.__version__} vs PyTorch {torch_info} threads, batch {TORCH_BATCH}; "
        f"median of {args.repeats} runs of {args.steps} steps, {args.rounds} round(s); "
        f"PyTorch on {'cnnjax' if args.torch_allocator else 'the environment'}'s allocator; "
        f"1-minute load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    print("| experiment | params | cnnjax batch | cnnjax images/s | PyTorch images/s | ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        print(_row(name, results[name]["cnnjax"], results[name]["torch"]))


if __name__ == "__main__":
    main()
