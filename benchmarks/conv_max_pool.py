"""LeNet-5's conv + ReLU + 2x2 max-pool layers three ways, as a training step runs them.

    python benchmarks/conv_max_pool.py [--batch 128] [--steps 8] [--repeats 15]

For each of LeNet's two conv layers (conv1: 28x28x1 -> 6, 5x5 SAME; conv2: 14x14x6 -> 16,
5x5 VALID; each followed by ReLU and a 2x2 max-pool) this times the forward and backward
pass (gradients of the kernel, the bias and, for conv2, the input) ``--steps`` times inside
one ``lax.scan``, as a fused training chunk runs them:

- ``conv_max_pool``: ``relu(ops.conv_max_pool(x, w, b))``, what ``cnnjax.models.lenet5``
  uses (on CPU: space-to-depth, the pool a max over phases);
- ``conv, max_pool``: ``ops.max_pool(relu(ops.conv(x, w, b)), 2)``, the two cnnjax ops
  (on CPU: im2col, and the pool as a reshape and a max);
- ``lax``: ``lax.conv_general_dilated`` and ``lax.reduce_window``, the textbook JAX code.

All three are checked to compute the same output first. Timing: two warm-up calls, then
``--repeats`` interleaved calls of each, median reported; ratios are against
``conv_max_pool`` in the same run.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from ops import fwd_bwd_in_loop, lax_conv, lax_max_pool_2x2  # benchmarks/ops.py

from cnnjax import ops

LAYERS = {  # name: (input shape without the batch, kernel shape, padding)
    "conv1 28x28x1 -> 6, 5x5 SAME": ((28, 28, 1), (5, 5, 1, 6), "SAME"),
    "conv2 14x14x6 -> 16, 5x5 VALID": ((14, 14, 6), (5, 5, 6, 16), "VALID"),
}


def fused(x, w, b, padding):
    return jax.nn.relu(ops.conv_max_pool(x, w, b, padding=padding))


def two_ops(x, w, b, padding):
    return ops.max_pool(jax.nn.relu(ops.conv(x, w, b, padding=padding)), 2)


def textbook(x, w, b, padding):
    return lax_max_pool_2x2(jax.nn.relu(lax_conv(x, w, padding=padding) + b))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=8, help="steps per lax.scan")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    variants = {"conv_max_pool": fused, "conv, max_pool": two_ops, "lax": textbook}
    device = jax.devices()[0]
    print(
        f"LeNet-5 conv + ReLU + max-pool layers, forward+backward, batch {args.batch}, "
        f"{args.steps} per lax.scan, median of {args.repeats}, jax {jax.__version__}, "
        f"{device.platform} ({device.device_kind})\n"
    )
    print(
        "| layer | "
        + " | ".join(f"{v} ms/step" for v in variants)
        + " | "
        + " | ".join(f"{v} / conv_max_pool" for v in list(variants)[1:])
        + " |"
    )
    print("|---|" + "---:|" * (2 * len(variants) - 1))
    rng = np.random.default_rng(0)
    for name, (shape, kernel, padding) in LAYERS.items():
        x = jnp.asarray(rng.normal(size=(args.batch, *shape)), jnp.float32)
        w = jnp.asarray(rng.normal(size=kernel) / np.sqrt(np.prod(kernel[:-1])), jnp.float32)
        b = jnp.asarray(rng.normal(size=kernel[-1:]) * 0.1, jnp.float32)
        reference = textbook(x, w, b, padding)
        for fn in variants.values():
            np.testing.assert_allclose(fn(x, w, b, padding), reference, rtol=1e-4, atol=1e-4)
        # conv1 reads the images, whose gradient a training step never needs.
        argnums = (0, 1, 2) if shape[-1] > 1 else (1, 2)
        fns = {
            v: fwd_bwd_in_loop(functools.partial(fn, padding=padding), 3, args.steps, argnums)
            for v, fn in variants.items()
        }
        times = {v: [] for v in variants}
        for repeat in range(args.repeats + 2):
            for v, fn in fns.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(x, w, b))
                if repeat >= 2:
                    times[v].append(1e3 * (time.perf_counter() - start) / args.steps)
        ms = {v: statistics.median(t) for v, t in times.items()}
        base = ms["conv_max_pool"]
        print(
            f"| {name} | "
            + " | ".join(f"{t:.2f}" for t in ms.values())
            + " | "
            + " | ".join(f"{ms[v] / base:.2f}" for v in list(variants)[1:])
            + " |"
        )


if __name__ == "__main__":
    main()
