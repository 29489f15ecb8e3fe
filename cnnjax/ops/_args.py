"""Argument normalisation and validation shared by every op.

Each op accepts ``stride``/``dilation`` as an int or one int per spatial dim, and
``padding`` as ``"SAME"``, ``"VALID"``, an int, one int per spatial dim or one
``(low, high)`` pair per spatial dim. These helpers turn them into tuples once,
and raise a ``ValueError`` that names the argument when they do not fit.
"""

from __future__ import annotations

from collections.abc import Sequence

PaddingLike = str | int | Sequence[int] | Sequence[tuple[int, int]]
IntOrSeq = int | Sequence[int]


def check_rank(name: str, shape: Sequence[int], expected: int | Sequence[int], what: str) -> None:
    """Raise if ``len(shape)`` is not one of ``expected``; ``what`` says the layout."""
    allowed = (expected,) if isinstance(expected, int) else tuple(expected)
    if len(shape) not in allowed:
        ranks = " or ".join(str(r) for r in allowed)
        raise ValueError(
            f"`{name}` must have rank {ranks} ({what}); got shape {tuple(shape)}"
        )


def spatial_rank_of_kernel(w_shape: Sequence[int], name: str = "w") -> int:
    """Number of spatial dims of a kernel ``(*k, C_in // groups, C_out)``; must be 1-3."""
    n = len(w_shape) - 2
    if n not in (1, 2, 3):
        raise ValueError(
            f"`{name}` must have layout (*kernel_spatial, C_in // groups, C_out) with 1, 2 "
            f"or 3 spatial dims; got shape {tuple(w_shape)}"
        )
    return n


def as_tuple(name: str, value: IntOrSeq, n: int, *, minimum: int = 1) -> tuple[int, ...]:
    """An int or ``n`` ints -> a tuple of ``n`` ints, each ``>= minimum``."""
    if isinstance(value, bool):
        raise ValueError(f"`{name}` must be an int or {n} ints; got {value!r}")
    if isinstance(value, int):
        out = (value,) * n
    else:
        try:
            out = tuple(value)
        except TypeError:
            raise ValueError(f"`{name}` must be an int or {n} ints; got {value!r}") from None
        if len(out) != n or not all(isinstance(v, int) and not isinstance(v, bool) for v in out):
            raise ValueError(
                f"`{name}` must be an int or a sequence of {n} ints (one per spatial dim); "
                f"got {value!r}"
            )
    if any(v < minimum for v in out):
        raise ValueError(f"`{name}` entries must be >= {minimum}; got {value!r}")
    return out


def effective_kernel(kernel: Sequence[int], dilation: Sequence[int]) -> tuple[int, ...]:
    """Spatial extent of a dilated kernel: ``dilation * (k - 1) + 1``."""
    return tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_pair(p: object) -> bool:
    """A non-negative ``(low, high)`` padding pair."""
    return (
        isinstance(p, Sequence) and len(p) == 2 and all(_is_int(v) and v >= 0 for v in p)
    )


def padding_pairs(
    padding: PaddingLike,
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    name: str = "padding",
) -> tuple[tuple[int, int], ...]:
    """Resolve ``padding`` to one explicit ``(low, high)`` pair per spatial dim.

    ``"SAME"`` follows TensorFlow/XLA: output ``ceil(in / stride)``, any odd total
    padding goes at the high end. ``"VALID"`` is no padding.
    """
    n = len(in_spatial)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * n
        if mode == "SAME":
            pairs = []
            for size, k, s in zip(
                in_spatial, effective_kernel(kernel, dilation), stride, strict=True
            ):
                out = -(-size // s)
                total = max((out - 1) * s + k - size, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise ValueError(f"`{name}` string must be 'SAME' or 'VALID'; got {padding!r}")
    if isinstance(padding, int) and not isinstance(padding, bool):
        if padding < 0:
            raise ValueError(f"`{name}` must be >= 0; got {padding}")
        return ((padding, padding),) * n
    try:
        entries = tuple(padding)
    except TypeError:
        entries = None
    if entries is not None and len(entries) == n:
        if all(_is_int(p) and p >= 0 for p in entries):
            return tuple((p, p) for p in entries)
        if all(_is_pair(p) for p in entries):
            return tuple((int(lo), int(hi)) for lo, hi in entries)
    raise ValueError(
        f"`{name}` must be 'SAME', 'VALID', a non-negative int, {n} non-negative ints or "
        f"{n} (low, high) pairs (one per spatial dim); got {padding!r}"
    )


def conv_output_shape(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    *,
    stride: IntOrSeq = 1,
    padding: PaddingLike = "SAME",
    dilation: IntOrSeq = 1,
) -> tuple[int, ...]:
    """Output spatial shape of a convolution or pooling window.

    Example: a 28x28 input and a 3x3 kernel give 28 (SAME, stride 1), 26 (VALID, 1) and
    13 (VALID, 2) per dim.

    Args:
      in_spatial: input spatial sizes, e.g. ``(H, W)``.
      kernel: kernel spatial sizes, same length.
      stride, padding, dilation: as for :func:`cnnjax.ops.conv`.
    """
    in_spatial = tuple(in_spatial)
    n = len(in_spatial)
    kernel = as_tuple("kernel", tuple(kernel), n)
    stride = as_tuple("stride", stride, n)
    dilation = as_tuple("dilation", dilation, n)
    pads = padding_pairs(padding, in_spatial, kernel, stride, dilation)
    out = []
    for size, (lo, hi), k, s in zip(
        in_spatial, pads, effective_kernel(kernel, dilation), stride, strict=True
    ):
        span = size + lo + hi - k
        if span < 0:
            raise ValueError(
                f"kernel (dilated extent {k}) is larger than the padded input ({size + lo + hi}) "
                f"for input spatial shape {in_spatial}, kernel {kernel}, padding {padding!r}"
            )
        out.append(span // s + 1)
    return tuple(out)
