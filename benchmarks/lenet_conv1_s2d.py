"""LeNet-5's first conv + pool as space-to-depth: the lead for issue 3's CPU speed target.

    python benchmarks/lenet_conv1_s2d.py

LeNet's conv1 (5x5, 1 -> 6 channels, SAME on 28x28) as im2col is a 25x-expanded patch
tensor feeding a 6-column matmul. Rewritten on the 2x2 space-to-depth input (16x16x4 after
padding) it is a 3x3 VALID conv to 4 phases x 6 channels: 2.8x fewer patch bytes and a
24-column matmul; the 2x2 max-pool after it is then a max over the 4 phases. The kernel
of the rewritten conv is a fixed linear map of the 5x5 one, so gradients reach the 5x5
kernel. This script times an 8-step ``lax.scan`` of Adam steps (batch 128) of bare-jnp
LeNet-5 (cnnjax ops) with three versions of conv1 + pool: as in cnnjax today, the
space-to-depth conv followed by depth-to-space and the usual pool (a pure conv lowering),
and the space-to-depth conv with the pool fused as the phase max. It first checks that all
three compute the same logits. Not yet used by cnnjax.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from cnnjax import ops

BATCH, STEPS, REPEATS = 128, 8, 7


def _embedding() -> jax.Array:
    """``E[m, n, u, v, r, s, a, b] = 1`` where tap ``(a, b)`` of the 5x5 kernel lands on tap
    ``(m, n)``, input phase ``(u, v)``, output phase ``(r, s)`` of the 3x3 s2d kernel."""
    e = np.zeros((3, 3, 2, 2, 2, 2, 5, 5), np.float32)
    for m, n, u, v, r, s in np.ndindex(3, 3, 2, 2, 2, 2):
        a, b = 2 * m + u - r, 2 * n + v - s
        if 0 <= a <= 4 and 0 <= b <= 4:
            e[m, n, u, v, r, s, a, b] = 1
    return jnp.asarray(e)


E = _embedding()


def s2d_conv1(p, x):
    """``(N, 28, 28, 1)`` -> ``(N, 14, 14, 2, 2, 6)``: conv1 output by (row, col) phase."""
    n = x.shape[0]
    xp = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
    xs = xp.reshape(n, 16, 2, 16, 2).transpose(0, 1, 3, 2, 4).reshape(n, 16, 16, 4)
    w = jnp.einsum("mnuvrsab,abo->mnuvrso", E, p["w1"][:, :, 0, :]).reshape(3, 3, 4, 24)
    return ops.conv(xs, w, padding="VALID").reshape(n, 14, 14, 2, 2, 6)


def conv1_pool_today(p, x):
    return ops.max_pool(jax.nn.relu(ops.conv(x, p["w1"], p["b1"], padding="SAME")), 2)


def conv1_pool_s2d_then_pool(p, x):
    y = s2d_conv1(p, x).transpose(0, 1, 3, 2, 4, 5).reshape(x.shape[0], 28, 28, 6)
    return ops.max_pool(jax.nn.relu(y + p["b1"]), 2)


def conv1_pool_s2d_fused(p, x):
    y = s2d_conv1(p, x).reshape(x.shape[0], 14, 14, 4, 6)
    return jax.nn.relu(y + p["b1"]).max(axis=3)


def init(key):
    shapes = {"w1": (5, 5, 1, 6), "w2": (5, 5, 6, 16), "d1": (400, 120), "d2": (120, 84),
              "d3": (84, 10)}  # fmt: skip
    keys = dict(zip(shapes, jax.random.split(key, len(shapes)), strict=True))
    p = {k: jax.random.normal(keys[k], s) / np.sqrt(np.prod(s[:-1])) for k, s in shapes.items()}
    p.update(b1=jnp.zeros(6), b2=jnp.zeros(16), c1=jnp.zeros(120), c2=jnp.zeros(84),
             c3=jnp.zeros(10))  # fmt: skip
    return p


def make(conv1_pool):
    def logits(p, x):
        h = conv1_pool(p, x)
        h = ops.max_pool(jax.nn.relu(ops.conv(h, p["w2"], p["b2"], padding="VALID")), 2)
        h = jax.nn.relu(h.reshape(x.shape[0], -1) @ p["d1"] + p["c1"])
        h = jax.nn.relu(h @ p["d2"] + p["c2"])
        return h @ p["d3"] + p["c3"]

    tx = optax.adam(1e-3)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean()

    @jax.jit
    def chunk(state, xs, ys):
        def body(state, batch):
            p, o = state
            updates, o = tx.update(jax.grad(loss)(p, *batch), o, p)
            return (optax.apply_updates(p, updates), o), None

        return lax.scan(body, state, (xs, ys))[0]

    return logits, tx, chunk


def main() -> None:
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(STEPS, BATCH, 28, 28, 1)).astype(np.float32))
    ys = jnp.asarray(rng.integers(0, 10, (STEPS, BATCH)))
    p = init(jax.random.key(0))
    variants = {"cnnjax today": conv1_pool_today,
                "s2d conv, depth-to-space, pool": conv1_pool_s2d_then_pool,
                "s2d conv, pool as phase max": conv1_pool_s2d_fused}  # fmt: skip
    built = {name: make(fn) for name, fn in variants.items()}
    reference = built["cnnjax today"][0](p, xs[0])
    for name, (logits, _, _) in built.items():
        np.testing.assert_allclose(logits(p, xs[0]), reference, rtol=1e-4, atol=1e-4, err_msg=name)
    states = {name: (p, tx.init(p)) for name, (_, tx, _) in built.items()}
    times = {name: [] for name in built}
    for repeat in range(REPEATS + 1):  # the first round compiles
        for name, (_, _, chunk) in built.items():
            start = time.perf_counter()
            states[name] = jax.block_until_ready(chunk(states[name], xs, ys))
            if repeat:
                times[name].append(time.perf_counter() - start)
    base = np.median(times["cnnjax today"])
    print(f"LeNet-5 train steps, batch {BATCH}, {STEPS} per lax.scan, median of {REPEATS}, "
          f"{jax.devices()[0].platform}")
    for name, t in times.items():
        print(f"{name:32s} {STEPS * BATCH / np.median(t):8,.0f} images/s  "
              f"{base / np.median(t):.2f}x")


if __name__ == "__main__":
    main()
