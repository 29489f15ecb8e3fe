"""Max pooling forward+backward, inside ``lax.scan`` as a fused training chunk runs it.

    python benchmarks/max_pool.py [--steps 8] [--repeats 15]

Times ``ops.max_pool`` on its non-overlapping (stride = window) path, ``ops.global_max_pool``
and, for comparison, ``lax.reduce_window`` (the textbook JAX max-pool, whose gradient is
``select_and_scatter``), at the shapes of the model zoo: LeNet-5's pools after its convs,
a 32x32x64 feature map, the 1-D pools of ``conv1d_seq`` and a global max-pool. Each is
``--steps`` gradient steps in one ``lax.scan``; two warm-up calls, then ``--repeats``
interleaved calls, median reported. Every gradient is checked against the
``reduce_window`` formulation's (the first maximum of a window gets it all) first.

A second table times ``global_max_pool`` against plain ``jnp.max`` over the spatial axes
(whose gradient splits ties instead), interleaved the same way: the price of the tie rule.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from ops import fwd_bwd_in_loop, time_pair  # benchmarks/ops.py

from cnnjax import ops

CASES = {  # name: (x shape, window or None for the global pool)
    "2x2 on 128x28x28x6 (LeNet conv1)": ((128, 28, 28, 6), 2),
    "2x2 on 128x10x10x16 (LeNet conv2)": ((128, 10, 10, 16), 2),
    "2x2 on 32x32x32x64": ((32, 32, 32, 64), 2),
    "2 on 128x28x32 (conv1d_seq)": ((128, 28, 32), 2),
    "global on 32x16x16x64": ((32, 16, 16, 64), None),
}


def textbook(x, window):
    # The global pool as one window over every spatial position.
    spatial = x.shape[1:-1] if window is None else (window,) * (x.ndim - 2)
    dims = (1, *spatial, 1)
    return lax.reduce_window(x, -jnp.inf, lax.max, dims, dims, "VALID")


def cnnjax_pool(x, window):
    return ops.global_max_pool(x) if window is None else ops.max_pool(x, window)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=8, help="steps per lax.scan")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args()
    device = jax.devices()[0]
    print(
        f"max-pool forward+backward, {args.steps} per lax.scan, median of {args.repeats}, "
        f"jax {jax.__version__}, {device.platform} ({device.device_kind})\n"
    )
    print("| pool | cnnjax ms/step | reduce_window ms/step | reduce_window / cnnjax |")
    print("|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for name, (shape, window) in CASES.items():
        # Rounded values: ties inside windows, as on raw MNIST pixels.
        x = jnp.asarray(np.round(rng.normal(size=shape), 1), jnp.float32)
        ours = functools.partial(cnnjax_pool, window=window)
        lax_pool = functools.partial(textbook, window=window)
        g_ours, g_lax = (jax.grad(lambda x, f=f: jnp.sum(f(x)))(x) for f in (ours, lax_pool))
        same = bool(jnp.array_equal(g_ours, g_lax))
        f = fwd_bwd_in_loop(ours, 1, args.steps)
        g = fwd_bwd_in_loop(lax_pool, 1, args.steps)
        t_ours, t_lax = time_pair(f, (x,), g, (x,), args.repeats)
        print(
            f"| {name}{'' if same else ' (gradient differs from reduce_window on ties)'} | "
            f"{t_ours / args.steps:.3f} | {t_lax / args.steps:.3f} | {t_lax / t_ours:.2f} |"
        )
    print(
        "\n| global pool | global_max_pool ms/step | jnp.max ms/step | jnp.max / global_max_pool |"
    )
    print("|---|---:|---:|---:|")
    for name, (shape, window) in CASES.items():
        if window is not None:
            continue
        x = jnp.asarray(np.round(rng.normal(size=shape), 1), jnp.float32)
        f = fwd_bwd_in_loop(ops.global_max_pool, 1, args.steps)
        g = fwd_bwd_in_loop(lambda x: jnp.max(x, axis=tuple(range(1, x.ndim - 1))), 1, args.steps)
        t_ours, t_max = time_pair(f, (x,), g, (x,), args.repeats)
        print(
            f"| {name} | {t_ours / args.steps:.3f} | {t_max / args.steps:.3f} | "
            f"{t_max / t_ours:.2f} |"
        )


if __name__ == "__main__":
    main()
