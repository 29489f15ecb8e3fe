"""Forward+backward speed of each cnnjax op next to the direct ``jax.lax`` expression.

    python benchmarks/ops.py [--batch 32] [--size 32] [--channels 64] [--repeats 15]

Each row times ``jit(value_and_grad(sum(op(*args)), argnums=all))`` — the work a training
step does for that layer — for the cnnjax op and for the same computation written directly
with ``lax.conv_general_dilated`` / ``lax.reduce_window``. Both are checked to compute the
same output first. Timing: two warm-up calls (compilation excluded), then ``--repeats``
interleaved calls of each, ``block_until_ready`` before the clock is read, median reported.
``temp MiB`` is XLA's temporary buffer size for the compiled forward+backward
(``memory_analysis().temp_size_in_bytes``).

A second table times the plain conv rows again inside a ``lax.scan`` of ``--loop_steps``
steps, as a fused training chunk or an evaluation pass runs them: there XLA's CPU backend
runs its native kernel-gradient convolution many times slower than outside a loop, which
is why cnnjax lowers every CPU conv to im2col (``cnnjax/ops/_lowering.py``).

The deformable row is compared with a plain conv of the same shape (not the same maths),
and a second table gives its memory: forward and forward+backward temporaries next to the
size of one ``(N, H_out, W_out, kh·kw·C_in)`` sampling tensor.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from cnnjax import ops

DIMS = ("NHWC", "HWIO", "NHWC")
MIB = 2**20


@dataclass(frozen=True)
class Row:
    name: str
    ours: Callable[..., jax.Array]
    ours_args: Sequence[jax.Array]
    direct: Callable[..., jax.Array]
    direct_args: Sequence[jax.Array]
    same_maths: bool = True  # False: the direct column is a reference point, not equal


def lax_conv(x, w, *, stride=1, padding="SAME", dilation=1, groups=1, lhs_dilation=None):
    """The textbook ``lax.conv_general_dilated`` call for a 2-D channels-last conv."""
    return lax.conv_general_dilated(
        x,
        w,
        (stride, stride),
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=(dilation, dilation),
        dimension_numbers=DIMS,
        feature_group_count=groups,
    )


def lax_conv_transpose(y, w):
    """Stride-2 SAME transposed conv (the vjp of the SAME conv of a 2x larger input), written
    with ``lax.conv_transpose``: for a 3x3 kernel that forward padding is (0, 1), so the
    stride-dilated ``y`` is padded by (k - 1 - 0, k - 1 - 1) = (2, 1)."""
    return lax.conv_transpose(
        y, w, (2, 2), ((2, 1), (2, 1)), dimension_numbers=DIMS, transpose_kernel=True
    )


def lax_avg_pool_2x2(x):
    return lax.reduce_window(x, 0.0, lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4.0


def lax_max_pool_2x2(x):
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def build_rows(n: int, size: int, c: int) -> list[Row]:
    keys = iter(jax.random.split(jax.random.key(0), 16))

    def normal(*shape, scale=1.0):
        return scale * jax.random.normal(next(keys), shape, jnp.float32)

    x = normal(n, size, size, c)
    w = normal(3, 3, c, c, scale=0.05)
    w_g4 = normal(3, 3, c // 4, c, scale=0.1)
    w_dw = normal(3, 3, 1, c, scale=0.3)
    w_pw = normal(1, 1, c, c, scale=0.1)
    w_col, w_row = normal(3, 1, c, c, scale=0.1), normal(1, 3, c, c, scale=0.1)
    y_half = normal(n, size // 2, size // 2, c)
    offsets = normal(n, size, size, 2 * 9, scale=0.5)
    mask = jax.nn.sigmoid(normal(n, size, size, 9))
    return [
        Row("conv 3x3", ops.conv, (x, w), lax_conv, (x, w)),
        Row(
            "conv 3x3 stride 2",
            lambda x, w: ops.conv(x, w, stride=2),
            (x, w),
            lambda x, w: lax_conv(x, w, stride=2),
            (x, w),
        ),
        Row(
            "conv 3x3 dilation 2",
            lambda x, w: ops.conv(x, w, dilation=2),
            (x, w),
            lambda x, w: lax_conv(x, w, dilation=2),
            (x, w),
        ),
        Row(
            "grouped conv 3x3, groups=4",
            lambda x, w: ops.conv(x, w, groups=4),
            (x, w_g4),
            lambda x, w: lax_conv(x, w, groups=4),
            (x, w_g4),
        ),
        Row(
            "depthwise conv 3x3",
            ops.depthwise_conv,
            (x, w_dw),
            lambda x, w: lax_conv(x, w, groups=c),
            (x, w_dw),
        ),
        Row(
            "separable conv 3x3",
            ops.separable_conv,
            (x, w_dw, w_pw),
            lambda x, wd, wp: lax_conv(lax_conv(x, wd, groups=c), wp),
            (x, w_dw, w_pw),
        ),
        Row(
            "spatially separable 3x1+1x3",
            ops.spatially_separable_conv2d,
            (x, w_col, w_row),
            lambda x, wc, wr: lax_conv(lax_conv(x, wc), wr),
            (x, w_col, w_row),
        ),
        Row(
            "conv_transpose 3x3 stride 2",
            lambda y, w: ops.conv_transpose(y, w, stride=2, padding="SAME"),
            (y_half, w),
            lax_conv_transpose,
            (y_half, w),
        ),
        Row("max_pool 2x2", lambda x: ops.max_pool(x, 2), (x,), lax_max_pool_2x2, (x,)),
        Row("avg_pool 2x2", lambda x: ops.avg_pool(x, 2), (x,), lax_avg_pool_2x2, (x,)),
        Row(
            "deformable_conv2d v2 3x3 (vs plain conv)",
            lambda x, o, w, m: ops.deformable_conv2d(x, o, w, mask=m, padding=1),
            (x, offsets, w, mask),
            lambda x, w: lax_conv(x, w, padding=((1, 1), (1, 1))),
            (x, w),
            same_maths=False,
        ),
    ]


def fwd_bwd(fn: Callable[..., jax.Array], nargs: int):
    """``jit(value_and_grad)`` of ``sum(fn(*args))`` with respect to every argument."""
    return jax.jit(jax.value_and_grad(lambda *a: jnp.sum(fn(*a)), argnums=tuple(range(nargs))))


def fwd_bwd_in_loop(
    fn: Callable[..., jax.Array], nargs: int, steps: int, argnums: Sequence[int] | None = None
):
    """:func:`fwd_bwd` ``steps`` times inside one ``lax.scan`` (gradients with respect to
    ``argnums``, default every argument). Each step's inputs depend on the carry, so XLA
    cannot hoist the work out of the loop, and its gradients feed the carry, so none is
    optimised away."""
    argnums = tuple(range(nargs)) if argnums is None else tuple(argnums)
    grad = jax.value_and_grad(lambda *a: jnp.sum(fn(*a)), argnums=argnums)

    def run(*args):
        def body(total, _):
            value, grads = grad(*(a * (1 + 1e-9 * total) for a in args))
            return total + value + sum(jnp.sum(g) for g in grads), None

        return lax.scan(body, jnp.zeros((), jnp.float32), None, length=steps)[0]

    return jax.jit(run)


def temp_mib(fn, args) -> float:
    return fn.lower(*args).compile().memory_analysis().temp_size_in_bytes / MIB


def time_pair(f, f_args, g, g_args, repeats: int) -> tuple[float, float]:
    """Median ms/call of ``f`` and ``g``, interleaved so load changes hit both alike."""
    for _ in range(2):
        jax.block_until_ready(f(*f_args))
        jax.block_until_ready(g(*g_args))
    times_f, times_g = [], []
    for _ in range(repeats):
        for fn, args, times in ((f, f_args, times_f), (g, g_args, times_g)):
            start = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times_f), statistics.median(times_g)


def check_same_output(row: Row) -> None:
    ours, direct = row.ours(*row.ours_args), row.direct(*row.direct_args)
    scale = float(jnp.abs(direct).max())
    np.testing.assert_allclose(ours, direct, rtol=2e-3, atol=2e-3 * scale, err_msg=row.name)


def speed_table(rows: Sequence[Row], repeats: int) -> str:
    lines = [
        "| op | cnnjax ms | direct lax ms | ratio | cnnjax temp MiB | direct temp MiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row.same_maths:
            check_same_output(row)
        ours = fwd_bwd(row.ours, len(row.ours_args))
        direct = fwd_bwd(row.direct, len(row.direct_args))
        t_ours, t_direct = time_pair(ours, row.ours_args, direct, row.direct_args, repeats)
        lines.append(
            f"| {row.name} | {t_ours:.2f} | {t_direct:.2f} | {t_ours / t_direct:.2f} | "
            f"{temp_mib(ours, row.ours_args):.1f} | {temp_mib(direct, row.direct_args):.1f} |"
        )
    return "\n".join(lines)


def loop_table(rows: Sequence[Row], steps: int, repeats: int) -> str:
    lines = [
        "| op, inside lax.scan | cnnjax ms/step | direct lax ms/step | ratio |",
        "|---|---:|---:|---:|",
    ]
    for row in rows:
        ours = fwd_bwd_in_loop(row.ours, len(row.ours_args), steps)
        direct = fwd_bwd_in_loop(row.direct, len(row.direct_args), steps)
        t_ours, t_direct = time_pair(ours, row.ours_args, direct, row.direct_args, repeats)
        lines.append(
            f"| {row.name} | {t_ours / steps:.2f} | {t_direct / steps:.2f} | "
            f"{t_ours / t_direct:.2f} |"
        )
    return "\n".join(lines)


def deformable_memory_table(row: Row) -> str:
    x, _, w, _ = row.ours_args
    n, h, wd, c_in = x.shape
    sampling = n * h * wd * w.shape[0] * w.shape[1] * c_in * x.dtype.itemsize / MIB
    lines = ["| computation | forward temp MiB | forward+backward temp MiB |", "|---|---:|---:|"]
    for name, fn, args in (
        ("deformable_conv2d v2", row.ours, row.ours_args),
        ("plain conv", row.direct, row.direct_args),
    ):
        forward = jax.jit(fn)
        lines.append(
            f"| {name} | {temp_mib(forward, args):.1f} | "
            f"{temp_mib(fwd_bwd(fn, len(args)), args):.1f} |"
        )
    lines.append(
        f"\nOne (N, H_out, W_out, kh*kw*C_in) float32 sampling tensor: {sampling:.1f} MiB."
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="H = W of the input")
    parser.add_argument("--channels", type=int, default=64, help="C_in = C_out")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--loop_steps", type=int, default=4, help="steps per lax.scan")
    args = parser.parse_args(argv)
    rows = build_rows(args.batch, args.size, args.channels)
    device = jax.devices()[0]
    print(
        f"cnnjax ops, forward+backward, N={args.batch}, {args.size}x{args.size}, "
        f"{args.channels}->{args.channels} channels, float32, jax {jax.__version__}, "
        f"{device.platform} ({device.device_kind}), median of {args.repeats}\n"
    )
    print(speed_table(rows, args.repeats))
    print()
    plain_convs = [row for row in rows if row.name.startswith("conv 3x3")]
    print(loop_table(plain_convs, args.loop_steps, repeats=3))
    print()
    print(deformable_memory_table(rows[-1]))


if __name__ == "__main__":
    main()
