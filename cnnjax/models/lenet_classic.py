"""LeNet-5 as published (LeCun, Bottou, Bengio & Haffner, 1998, Section II.B).

What makes it differ from the modern ``lenet5``: trainable subsampling layers (S2, S4), the
partial connection table between S2 and C3 (Table I), and the scaled tanh squashing
function after every layer up to F6. The two layers the paper introduces live here:
:class:`Subsampling` and :class:`ConnectionTableConv`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from jax.typing import DTypeLike

from cnnjax import ops
from cnnjax.layers import Conv
from cnnjax.layers._checks import check_positive_int
from cnnjax.models import register
from cnnjax.ops._args import PaddingLike, as_tuple

# Table I of the paper: row i is S2 map i, column j is C3 map j; "X" connects them.
TABLE_I = (
    "X...XXX..XXXX.XX",
    "XX...XXX..XXXX.X",
    "XXX...XXX..X.XXX",
    ".XXX..XXXX..X.XX",
    "..XXX..XXXX.XX.X",
    "...XXX..XXXX.XXX",
)

# The squashing function f(a) = A tanh(S a) of Appendix A: A = 1.7159 and S = 2/3 make
# f(1) = 1 and f(-1) = -1, where the second derivative of f is largest.
_A, _S = 1.7159, 2.0 / 3.0


def scaled_tanh(x: jax.Array) -> jax.Array:
    """``1.7159 * tanh(2/3 * x)``, elementwise."""
    return _A * jnp.tanh(_S * x)


def table_to_mask(table: Sequence[str]) -> np.ndarray:
    """A table of ``"X"``/``"."`` strings as a ``(rows, columns)`` 0/1 int array."""
    widths = {len(row) for row in table}
    if len(widths) != 1 or any(set(row) - {"X", "."} for row in table):
        raise ValueError(f"`table` must be rows of equal length made of 'X' and '.'; got {table}")
    return np.array([[ch == "X" for ch in row] for row in table], np.int32)


class Subsampling(nn.Module):
    """Trainable subsampling (the paper's S layers), 2-D.

    Each output is the sum of a ``window x window`` block of its input map (non-overlapping,
    stride ``window``) times a trainable coefficient, plus a trainable bias, both per map:
    ``y[n, i, j, c] = coefficient[c] * sum(x[n, w*i : w*i+w, w*j : w*j+w, c]) + bias[c]``.
    The squashing function is applied by the caller.

    Params: ``coefficient`` ``(C,)``, initialised to ``1 / window**2`` so that the layer
    starts as average pooling; ``bias`` ``(C,)``, zeros.

    ``x: (N, H, W, C) -> (N, H // window, W // window, C)``.
    """

    window: int = 2
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        check_positive_int("window", self.window)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"`x` must have shape (N, H, W, C); got shape {tuple(x.shape)}")
        c = x.shape[-1]
        area = self.window**2
        coefficient = self.param(
            "coefficient", nn.initializers.constant(1.0 / area), (c,), self.param_dtype
        )
        bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
        x, coefficient, bias = promote_dtype(x, coefficient, bias, dtype=self.dtype)
        # The window sum is the window mean times its area. Per-map values are reshaped
        # to (1, 1, 1, C) rather than rank-promoted, so strict rank promotion is fine.
        scale = (area * coefficient).reshape(1, 1, 1, c)
        return ops.avg_pool(x, self.window) * scale + bias.reshape(1, 1, 1, c)


class ConnectionTableConv(nn.Module):
    """2-D convolution in which output map ``j`` sees only the input maps ``i`` with
    ``table[i][j] == "X"`` (the paper's C3).

    Only the connected ``kernel_size x kernel_size`` filters are parameters: ``kernel``
    ``(kh, kw, K)`` holds the K connections in row-major order of the table (by input
    map, then output map). Each call scatters them into a full ``(kh, kw, C_in, C_out)``
    kernel that is zero where the table has no connection, and convolves with it, so a
    disconnected input map has no effect on (and gets no gradient from) that output.

    Attributes:
      table: ``C_in`` strings of ``C_out`` characters, ``"X"`` (connected) or ``"."``.
      kernel_size: int or ``(kh, kw)``.
      padding: as for :func:`cnnjax.ops.conv`.

    Params: ``kernel`` ``(kh, kw, K)``, initialised with variance ``1 / fan_in`` where
    ``fan_in = kh * kw * (inputs of the connection's output map)``; ``bias`` ``(C_out,)``.

    ``x: (N, H, W, C_in) -> (N, H_out, W_out, C_out)``.
    """

    table: tuple[str, ...]
    kernel_size: int | tuple[int, int] = 5
    padding: PaddingLike = "VALID"
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32

    def __post_init__(self) -> None:
        mask = table_to_mask(self.table)
        empty = np.flatnonzero(mask.sum(axis=0) == 0)
        if empty.size:
            raise ValueError(f"`table` leaves output maps {empty.tolist()} with no input")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        mask = table_to_mask(self.table)
        c_in, c_out = mask.shape
        if x.ndim != 4 or x.shape[-1] != c_in:
            raise ValueError(
                f"`x` must have shape (N, H, W, {c_in}) for a table of {c_in} rows; got "
                f"shape {tuple(x.shape)}"
            )
        kh, kw = as_tuple("kernel_size", self.kernel_size, 2)
        rows, cols = np.nonzero(mask)  # row-major: the layout of the ``kernel`` param
        fan_in = kh * kw * mask.sum(axis=0)[cols]

        def init(key: jax.Array, shape: tuple[int, ...], dtype: DTypeLike) -> jax.Array:
            std = (1 / np.sqrt(fan_in)).reshape(1, 1, -1).astype(dtype)
            return jax.random.normal(key, shape, dtype) * std

        kernel = self.param("kernel", init, (kh, kw, len(rows)), self.param_dtype)
        bias = self.param("bias", nn.initializers.zeros, (c_out,), self.param_dtype)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        # Scatter as a contraction with a fixed 0/1 tensor: it compiles faster than an
        # indexed update, and HIGHEST precision keeps it exact on TPU, whose default would
        # round the float32 weights to bfloat16.
        placement = np.zeros((len(rows), c_in, c_out), np.float32)
        placement[np.arange(len(rows)), rows, cols] = 1
        full = jnp.einsum(
            "hwk,kio->hwio", kernel, placement.astype(kernel.dtype), precision="highest"
        )
        return ops.conv(x, full, bias, padding=self.padding)


@register("lenet5_classic")
class LeNet5Classic(nn.Module):
    """LeNet-5 of 1998 for 32x32 single-channel images (MNIST zero-padded by 2 pixels).

    ======  ================================================  ===========  =======
    layer   operation                                         output       params
    ======  ================================================  ===========  =======
    c1      5x5 conv, 6 maps, VALID                           28 x 28 x 6      156
    s2      2x2 trainable subsampling                         14 x 14 x 6       12
    c3      5x5 conv, 16 maps, Table I connections (60)       10 x 10 x 16   1,516
    s4      2x2 trainable subsampling                         5 x 5 x 16        32
    c5      5x5 conv, 120 maps, VALID                         1 x 1 x 120   48,120
    f6      dense                                             84            10,164
    output  dense                                             num_classes      850
    ======  ================================================  ===========  =======

    Every layer up to F6 is followed by the scaled tanh ``1.7159 tanh(2x/3)``; 60,850
    params at 10 classes. The output layer is a plain dense layer trained with softmax
    cross-entropy (as the rest of cnnjax), not the paper's Euclidean RBF units with fixed
    7x12 bitmap codes and its MAP loss.

    Attributes:
      num_classes: size of the output layer.
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, 32, 32, 1) -> logits (N, num_classes)``; other sizes are rejected, because C5
    is fully connected to S4 only when S4 is 5x5.
    """

    num_classes: int = 10
    dtype: DTypeLike | None = None

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm; the flag keeps every model's signature alike
        if x.ndim != 4 or x.shape[1:3] != (32, 32):
            raise ValueError(
                f"`x` must have shape (N, 32, 32, C) (pad MNIST with dataset.pad=2); got "
                f"shape {tuple(x.shape)}"
            )
        x = scaled_tanh(Conv(6, (5, 5), padding="VALID", dtype=self.dtype, name="c1")(x))
        x = scaled_tanh(Subsampling(2, dtype=self.dtype, name="s2")(x))
        x = scaled_tanh(ConnectionTableConv(TABLE_I, 5, dtype=self.dtype, name="c3")(x))
        x = scaled_tanh(Subsampling(2, dtype=self.dtype, name="s4")(x))
        x = scaled_tanh(Conv(120, (5, 5), padding="VALID", dtype=self.dtype, name="c5")(x))
        x = x.reshape(x.shape[0], -1)
        x = scaled_tanh(nn.Dense(84, dtype=self.dtype, name="f6")(x))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="output")(x)
