"""Training speed of ``mnist_lenet`` next to plain baselines, measured side by side in one run.

    TFDS_DATA_DIR=../shared/tfds python benchmarks/train_speed.py [--epochs N] [--baseline_epochs N]

Four runs, each in its own subprocess (so each peak RSS is its own), one after another:

1. **cnnjax**: ``mnist_lenet`` with its default recipe, through ``train_and_evaluate`` (what
   ``launch.py`` calls; ``--epochs`` overrides the length); images/s, seconds to 99 % and
   accuracy are those of its ``summary.json``.
2. **plain Flax**: the same LeNet-5 written with ``flax.linen`` (``nn.Conv``,
   ``nn.max_pool``), Adam, batch 128, one ``jax.jit`` call per step on NumPy batches,
   evaluation on the full test split after every epoch: the loop of the Flax examples.
3. **PyTorch, DataLoader** (when ``torch`` is installed, the ``bench`` extra): the idiomatic
   eager loop, same model, Adam, batch 128, batches from a shuffling
   ``DataLoader(TensorDataset(x, y))`` over the normalised images in memory.
4. **PyTorch, indexed**: the same loop taking each batch by indexing the image tensor with
   a slice of a random permutation (no ``DataLoader``): the fastest plain PyTorch loop we
   know for in-memory data, the stronger baseline.

Images/s are steady state: the first epoch (compilation) is excluded and the median of the
remaining epochs is reported. Seconds to 99 % count from the first step, compilation
included. Peak RSS is ``ru_maxrss`` of each subprocess.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 0.99
BATCH = 128


def _load_mnist():
    import ml_collections

    from cnnjax.training import data

    cfg = ml_collections.ConfigDict(
        {
            "name": "mnist",
            "train_split": "train",
            "test_split": "test",
            "data_dir": None,
            "cache_dir": None,
            "download": False,
        }
    )
    return data.load(cfg)


def _report(name, epoch_rates, accs, times, start):
    """The figures of one baseline from per-epoch rates, test accuracies and wall times."""
    hit = next((t - start for t, a in zip(times, accs, strict=True) if a >= TARGET), None)
    return {
        "name": name,
        "images_per_second": statistics.median(epoch_rates[1:] or epoch_rates),
        "seconds_to_99": hit,
        "final_test_accuracy": accs[-1],
        "epochs": len(accs),
    }


def plain_flax(epochs: int) -> dict:
    """The Flax examples' loop: one jitted step per batch fed from NumPy."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    class LeNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding="SAME")(x)), (2, 2), (2, 2))
            x = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x)), (2, 2), (2, 2))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(84)(nn.relu(nn.Dense(120)(x))))
            return nn.Dense(10)(x)

    ds = _load_mnist()
    norm = lambda u8: (u8.astype(np.float32) / 255.0 - 0.1307) / 0.3081  # noqa: E731
    x_train, y_train = norm(ds.train.images), ds.train.labels
    x_test, y_test = norm(ds.test.images), ds.test.labels
    model, tx = LeNet(), optax.adam(1e-3)
    params = model.init(jax.random.key(0), x_train[:1])["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    @jax.jit
    def hits(params, x, y):
        return jnp.sum(jnp.argmax(model.apply({"params": params}, x), -1) == y)

    rng = np.random.default_rng(0)
    rates, accs, times = [], [], []
    start = time.perf_counter()
    for _ in range(epochs):
        order = rng.permutation(len(y_train))
        t0 = time.perf_counter()
        for i in range(len(order) // BATCH):
            idx = order[i * BATCH : (i + 1) * BATCH]
            params, opt_state = step(params, opt_state, x_train[idx], y_train[idx])
        jax.block_until_ready(params)
        rates.append((len(order) // BATCH) * BATCH / (time.perf_counter() - t0))
        correct = sum(
            int(hits(params, x_test[i : i + 1000], y_test[i : i + 1000]))
            for i in range(0, len(y_test), 1000)
        )
        accs.append(correct / len(y_test))
        times.append(time.perf_counter())
    return _report("plain Flax loop (jit per step)", rates, accs, times, start)


def _torch_lenet():
    import torch
    import torch.nn.functional as F  # noqa: N812

    class LeNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 6, 5, padding=2)
            self.c2 = torch.nn.Conv2d(6, 16, 5)
            self.f1, self.f2 = torch.nn.Linear(400, 120), torch.nn.Linear(120, 84)
            self.f3 = torch.nn.Linear(84, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.c1(x)), 2)
            x = F.max_pool2d(F.relu(self.c2(x)), 2).flatten(1)
            return self.f3(F.relu(self.f2(F.relu(self.f1(x)))))

    return LeNet()


def pytorch(epochs: int, *, loader: bool) -> dict:
    """The PyTorch 2 CPU loop of the same model: batches from a ``DataLoader`` (the idiom)
    or by indexing the image tensor (``loader=False``)."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    torch.manual_seed(0)
    ds = _load_mnist()
    to_t = lambda u8: (torch.from_numpy(u8).float().permute(0, 3, 1, 2) / 255 - 0.1307) / 0.3081  # noqa: E731
    x_train, y_train = to_t(ds.train.images), torch.from_numpy(ds.train.labels).long()
    x_test, y_test = to_t(ds.test.images), torch.from_numpy(ds.test.labels).long()
    batches = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_train, y_train),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
    )

    def epoch_batches():
        if loader:
            yield from batches
            return
        order = torch.randperm(len(y_train))
        for i in range(len(order) // BATCH):
            idx = order[i * BATCH : (i + 1) * BATCH]
            yield x_train[idx], y_train[idx]

    model = _torch_lenet()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    rates, accs, times = [], [], []
    start = time.perf_counter()
    for _ in range(epochs):
        t0, seen = time.perf_counter(), 0
        model.train()
        for x, y in epoch_batches():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            seen += len(y)
        rates.append(seen / (time.perf_counter() - t0))
        model.eval()
        with torch.no_grad():
            accs.append((model(x_test).argmax(1) == y_test).float().mean().item())
        times.append(time.perf_counter())
    how = "DataLoader" if loader else "indexed batches"
    name = f"PyTorch {torch.__version__} eager loop, {how}, {torch.get_num_threads()} threads"
    return _report(name, rates, accs, times, start)


def cnnjax_run(epochs: int | None) -> dict:
    """``mnist_lenet`` through the trainer that ``launch.py`` calls."""
    from cnnjax.training import load_experiment, train_and_evaluate

    config = load_experiment("mnist_lenet", ROOT / "experiments")
    if epochs:
        config.total_epochs = epochs
    with tempfile.TemporaryDirectory() as workdir:
        s = train_and_evaluate(config, workdir)
    return {
        "name": "cnnjax mnist_lenet",
        "images_per_second": s["train_images_per_second"],
        "seconds_to_99": s["seconds_to_target"],
        "final_test_accuracy": s["final_test_accuracy"],
        "epochs": s["epochs"],
    }


def _in_subprocess(fn: str, epochs: int | None) -> dict:
    """Runs ``fn(epochs)`` of this file in a fresh interpreter, so its peak RSS is its own."""
    out = subprocess.run(
        [sys.executable, __file__, "--_run", fn, "--epochs", str(epochs or 0)],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--epochs", type=int, default=0, help="cnnjax epochs (0: the experiment's default)"
    )
    p.add_argument("--baseline_epochs", type=int, default=12)
    p.add_argument("--_run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._run:
        fn = {
            "cnnjax": cnnjax_run,
            "flax": plain_flax,
            "torch_loader": functools.partial(pytorch, loader=True),
            "torch_indexed": functools.partial(pytorch, loader=False),
        }[args._run]
        result = fn(args.epochs or None)
        result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(result))
        return

    import jax

    rows = [
        _in_subprocess("cnnjax", args.epochs or None),
        _in_subprocess("flax", args.baseline_epochs),
    ]
    try:
        import torch  # noqa: F401

        rows.append(_in_subprocess("torch_loader", args.baseline_epochs))
        rows.append(_in_subprocess("torch_indexed", args.baseline_epochs))
    except ImportError:
        print("(PyTorch not installed: pip install -e '.[bench]' for its row)")
    print(
        f"mnist_lenet training on {jax.devices()[0].device_kind} ({os.cpu_count()} cores), "
        f"jax {jax.__version__}"
    )
    print("| run | epochs | images/s (steady) | s to 99% | final test acc | peak RSS GB |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['name']} | {r['epochs']} | {r['images_per_second']:,.0f} | "
            f"{_fmt(r['seconds_to_99'], '.1f')} | {r['final_test_accuracy']:.2%} | "
            f"{r['peak_rss_gb']:.2f} |"
        )
    base = rows[0]["images_per_second"]
    for r in rows[1:]:
        print(f"cnnjax / {r['name']}: {base / r['images_per_second']:.2f}x images/s")


if __name__ == "__main__":
    main()
