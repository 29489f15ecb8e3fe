"""How a convolution is handed to XLA.

Every op in :mod:`cnnjax.ops` that convolves ends in :func:`conv_general`, so the choice
of lowering (and any backend-specific fast path) is made here, once.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
from jax import lax

_SPATIAL = "DHW"


def dimension_numbers(n: int) -> tuple[str, str, str]:
    """Channels-last layouts for ``n`` spatial dims, e.g. ``("NHWC", "HWIO", "NHWC")``."""
    s = _SPATIAL[-n:]
    return (f"N{s}C", f"{s}IO", f"N{s}C")


def conv_general(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: Sequence[int],
    padding: Sequence[tuple[int, int]],
    dilation: Sequence[int],
    groups: int = 1,
    lhs_dilation: Sequence[int] | None = None,
    precision: lax.Precision | None = None,
) -> jax.Array:
    """Channels-last N-d convolution with already-validated, explicit arguments.

    Args:
      x: ``(N, *spatial, C_in)``.
      w: ``(*kernel_spatial, C_in // groups, C_out)``.
      stride, dilation: one int per spatial dim.
      padding: one ``(low, high)`` pair per spatial dim (may be negative for cropping).
      groups: feature groups.
      lhs_dilation: input dilation (used by transposed convolution), one int per dim.

    Returns:
      ``(N, *out_spatial, C_out)``.
    """
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=tuple(stride),
        padding=tuple(padding),
        lhs_dilation=None if lhs_dilation is None else tuple(lhs_dilation),
        rhs_dilation=tuple(dilation),
        dimension_numbers=dimension_numbers(w.ndim - 2),
        feature_group_count=groups,
        precision=precision,
    )
