"""Every convolution of the zoo's MNIST models, on CPU: cnnjax's own lowering against oneDNN.

    TFDS_DATA_DIR=... python benchmarks/conv_layers.py [--only mnist_alexnet,mnist_nin]
        [--steps 2] [--repeats 5]

Each distinct ``conv_general`` call that the experiments' models make (at the batch each
experiment's config trains with: ``batch_size / microbatches``, on the inputs its dataset
gives) is timed forward + data gradient + weights gradient (``jax.vjp`` in a ``lax.scan``
of ``steps`` steps, the cotangent through a ReLU mask), lowered by cnnjax's own CPU
lowering (``CNNJAX_ONEDNN=0``) and by oneDNN (``_lowering._conv_onednn``, whatever the
rule says), alternating twice, the faster of each; ms per step. A conv of the model's
input (``input`` in the table) is timed without the data gradient, which training never
computes. The last column is what ``_lowering._use_onednn`` picks. Run it on an idle
machine: the two sides share the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax import models
from cnnjax.ops import _lowering
from cnnjax.training import load_experiment
from cnnjax.training.inputs import build_inputs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from zoo import EXPERIMENTS  # noqa: E402


def conv_calls(names: list[str]) -> dict[tuple, list[str]]:
    """``{(x shape, w shape, stride, padding, dilation, groups, lhs_dilation, of the input):
    [experiments]}`` of every ``conv_general`` call the experiments' models make, found by
    tracing them; the last flag says whether ``x`` is shaped as the model's input."""
    calls: dict[tuple, list[str]] = {}
    modules = [_lowering, importlib.import_module("cnnjax.ops.conv")]
    original = _lowering.conv_general

    def record(x, w, **kw):
        n = w.ndim - 2
        key = (
            x.shape,
            w.shape,
            tuple(kw["stride"]),
            tuple(tuple(p) for p in kw["padding"]),
            tuple(kw["dilation"]),
            kw.get("groups", 1),
            tuple(kw.get("lhs_dilation") or (1,) * n),
            x.shape == input_shape,
        )
        calls.setdefault(key, [])
        if current not in calls[key]:
            calls[key].append(current)
        return original(x, w, **kw)

    for m in modules:
        m.conv_general = record
    try:
        for current in names:
            config = load_experiment(current, ROOT / "experiments")
            model = models.get(config.model.name, **config.model.kwargs.to_dict())
            batch = config.batch_size // config.microbatches
            input_shape = (batch, *build_inputs(config).input_shape[1:])
            x = jnp.zeros(input_shape)
            init = functools.partial(model.init_with_output, jax.random.key(0), train=False)
            jax.eval_shape(init, x)
    finally:
        for m in modules:
            m.conv_general = original
    return calls


def vjp_ms(fn, x, w, steps: int, repeats: int, data_grad: bool) -> float:
    def body(carry, _):
        x, w = carry
        if data_grad:
            y, vjp = jax.vjp(fn, x, w)
            gx, gw = vjp(jnp.maximum(y, 0) - 0.5)
            return (x + 1e-3 * gx, w + 1e-3 * gw), None
        y, vjp = jax.vjp(lambda w: fn(x, w), w)
        (gw,) = vjp(jnp.maximum(y, 0) - 0.5)
        return (x, w + 1e-3 * gw), None

    run = jax.jit(lambda x, w: lax.scan(body, (x, w), None, length=steps)[0])
    jax.block_until_ready(run(x, w))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(x, w))
        times.append((time.perf_counter() - start) / steps)
    return float(np.median(times) * 1e3)


@contextlib.contextmanager
def onednn_off():
    before = os.environ.get("CNNJAX_ONEDNN")
    os.environ["CNNJAX_ONEDNN"] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ["CNNJAX_ONEDNN"]
        else:
            os.environ["CNNJAX_ONEDNN"] = before


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="", help="comma-separated experiments (default: all)")
    p.add_argument("--steps", type=int, default=2, help="vjp steps per timed call")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    args = p.parse_args()
    names = [n if n.startswith("mnist_") else f"mnist_{n}" for n in args.only.split(",") if n]
    names = names or EXPERIMENTS
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; ms per vjp step")
    print("| experiments | x | w | stride, dilation, groups | own | oneDNN | ratio | rule |")
    print("|---|---|---|---|---:|---:|---:|---|")
    for (xs, ws, stride, pads, dil, groups, lhs, first), who in conv_calls(names).items():
        x = jax.random.normal(jax.random.key(0), xs)
        w = jax.random.normal(jax.random.key(1), ws) * 0.1
        args_ = dict(stride=stride, padding=pads, dilation=dil, groups=groups, lhs_dilation=lhs)
        own_fn = functools.partial(_lowering.conv_general, **args_)
        times = {"own": [], "onednn": []}
        for _ in range(2):
            with onednn_off():
                times["own"].append(vjp_ms(own_fn, x, w, args.steps, args.repeats, not first))
            if set(lhs) == {1}:
                onednn_fn = functools.partial(
                    _lowering._conv_onednn, stride=stride, padding=pads, dilation=dil, groups=groups
                )
                times["onednn"].append(vjp_ms(onednn_fn, x, w, args.steps, args.repeats, not first))
        own = min(times["own"])
        rule = "oneDNN" if _lowering._use_onednn(x, w, stride, pads, dil, groups, lhs) else "own"
        shape = lambda s: "x".join(map(str, s))  # noqa: E731
        what = f"{stride[0]}, {dil[0]}, {groups}" + (", transposed" if set(lhs) != {1} else "")
        what += ", input" if first else ""
        if times["onednn"]:
            onednn = min(times["onednn"])
            cells = f"{own:.2f} | {onednn:.2f} | {own / onednn:.2f}x"
        else:
            cells = f"{own:.2f} | | "
        names_ = ", ".join(n.removeprefix("mnist_") for n in who)
        print(f"| {names_} | {shape(xs)} | {shape(ws)} | {what} | {cells} | {rule} |", flush=True)


if __name__ == "__main__":
    main()
