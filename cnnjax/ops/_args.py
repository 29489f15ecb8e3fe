"""Argument normalisation and validation shared by every op.

Each op accepts ``stride``/``dilation`` as an int or one int per spatial dim, and
``padding`` as a string (``"SAME"``, ``"SAME_LOWER"``, ``"VALID"``, ``"CAUSAL"``,
``"CIRCULAR"``, ``"REFLECT"``, ``"REPLICATE"``), an int, or one entry per spatial dim,
each an int or a ``(low, high)`` pair; negative amounts crop. These helpers turn them into
tuples once, and raise a ``ValueError`` that names the argument when they do not fit.

How padded cells are filled is separate from how many there are: ``padding_mode`` is
``"zeros"``, ``"reflect"``, ``"replicate"`` or ``"circular"`` (PyTorch's names); the
strings ``"CIRCULAR"``, ``"REFLECT"`` and ``"REPLICATE"`` set both (Flax's amounts).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

PaddingLike = str | int | Sequence[int | tuple[int, int]]
IntOrSeq = int | Sequence[int]

# padding_mode -> the ``jnp.pad`` mode that fills the padded cells.
PADDING_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                 "circular": "wrap"}  # fmt: skip
# Padding strings that also fix the fill, as Flax's ``padding="CIRCULAR"``/``"REFLECT"``.
_FILLING_STRINGS = {"CIRCULAR": "circular", "REFLECT": "reflect", "REPLICATE": "replicate"}
PADDING_STRINGS = ("SAME", "SAME_LOWER", "VALID", "CAUSAL", *_FILLING_STRINGS)


def as_array(name: str, value: object) -> jax.Array:
    """``value`` as a JAX array (Python lists and NumPy arrays are converted), or a
    ``ValueError`` naming ``name`` when it is not numeric."""
    if isinstance(value, jax.Array):
        return value
    try:
        out = jnp.asarray(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`{name}` must be an array; got {type(value).__name__}: {e}") from None
    if not (jnp.issubdtype(out.dtype, jnp.number) or out.dtype == jnp.bool_):
        raise ValueError(f"`{name}` must be a numeric array; got dtype {out.dtype}")
    return out


def check_nonempty(name: str, shape: Sequence[int], axes: Sequence[int], what: str) -> None:
    """Raise if any of ``shape[axes]`` is 0; ``what`` names those dims."""
    if any(shape[a] == 0 for a in axes):
        raise ValueError(f"`{name}` must have no zero-size {what}; got shape {tuple(shape)}")


def check_rank(name: str, shape: Sequence[int], expected: int | Sequence[int], what: str) -> None:
    """Raise if ``len(shape)`` is not one of ``expected``; ``what`` says the layout."""
    allowed = (expected,) if isinstance(expected, int) else tuple(expected)
    if len(shape) not in allowed:
        ranks = " or ".join(str(r) for r in allowed)
        raise ValueError(f"`{name}` must have rank {ranks} ({what}); got shape {tuple(shape)}")


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
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _as_pair(p: object) -> tuple[int, int] | None:
    """An int ``p`` -> ``(p, p)``; a ``(low, high)`` pair of ints -> itself; else ``None``."""
    if _is_int(p):
        return int(p), int(p)
    is_pair = isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2
    if is_pair and all(_is_int(v) for v in p):
        return int(p[0]), int(p[1])
    return None


def padding_pairs(
    padding: PaddingLike,
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    name: str = "padding",
) -> tuple[tuple[int, int], ...]:
    """Resolve ``padding`` to one explicit ``(low, high)`` pair per spatial dim.

    With ``e = dilation * (k - 1) + 1`` the dilated kernel extent per dim:

    - ``"SAME"``: TensorFlow/XLA, output ``ceil(in / stride)``, an odd total at the high
      end; ``"SAME_LOWER"``: the same total, the odd cell at the low end (lax, ONNX);
    - ``"VALID"``: none; ``"CAUSAL"``: ``(e - 1, 0)``, so output ``t`` sees inputs
      ``<= t`` (Keras, Flax);
    - ``"CIRCULAR"``, ``"REFLECT"``, ``"REPLICATE"``: ``((e - 1) // 2, e // 2)`` as Flax
      (the fill comes from :func:`padding_fill`);
    - an int, or one entry per spatial dim, each an int or a ``(low, high)`` pair (mixed,
      e.g. ``[1, (2, 3)]``); negative amounts crop, as in ``lax.conv_general_dilated``.
    """
    n = len(in_spatial)
    extents = effective_kernel(kernel, dilation)
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "VALID":
            return ((0, 0),) * n
        if mode in ("SAME", "SAME_LOWER"):
            pairs = []
            for size, e, s in zip(in_spatial, extents, stride, strict=True):
                total = max((-(-size // s) - 1) * s + e - size, 0)
                small, big = total // 2, total - total // 2
                pairs.append((small, big) if mode == "SAME" else (big, small))
            return tuple(pairs)
        if mode == "CAUSAL":
            return tuple((e - 1, 0) for e in extents)
        if mode in _FILLING_STRINGS:
            return tuple(((e - 1) // 2, e // 2) for e in extents)
        raise ValueError(f"`{name}` string must be one of {PADDING_STRINGS}; got {padding!r}")
    if _is_int(padding):
        return ((int(padding), int(padding)),) * n
    try:
        entries = tuple(padding)
    except TypeError:
        entries = None
    if entries is not None and len(entries) == n:
        pairs = tuple(_as_pair(p) for p in entries)
        if all(p is not None for p in pairs):
            return pairs
    raise ValueError(
        f"`{name}` must be one of {PADDING_STRINGS}, an int, or {n} entries (one per spatial "
        f"dim), each an int or a (low, high) pair; got {padding!r}"
    )


def padding_fill(padding: PaddingLike, padding_mode: str, name: str = "padding_mode") -> str:
    """The ``jnp.pad`` mode of the padded cells, from ``padding_mode`` and ``padding``."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"`{name}` must be one of {tuple(PADDING_MODES)}; got {padding_mode!r}")
    implied = _FILLING_STRINGS.get(padding.upper()) if isinstance(padding, str) else None
    if implied is not None and padding_mode not in ("zeros", implied):
        raise ValueError(
            f"`padding`={padding!r} fills with {implied!r}; it conflicts with "
            f"`{name}`={padding_mode!r}"
        )
    return PADDING_MODES[implied or padding_mode]


def pad_input(
    x: jax.Array, pairs: Sequence[tuple[int, int]], fill: str, name: str = "x"
) -> tuple[jax.Array, tuple[tuple[int, int], ...]]:
    """Apply the crops (negative amounts) of ``pairs`` to ``x``'s spatial dims, and with a
    non-zero ``fill`` its padding too; returns ``x`` and the zero padding left to apply.

    Args:
      x: ``(N, *spatial, C)``.
      pairs: one ``(low, high)`` pair per spatial dim.
      fill: a ``jnp.pad`` mode (``"constant"`` leaves the positive amounts to the caller).
    """
    crop = [(min(lo, 0), min(hi, 0)) for lo, hi in pairs]
    if any(lo or hi for lo, hi in crop):
        config = [(0, 0, 0), *((lo, hi, 0) for lo, hi in crop), (0, 0, 0)]
        x = lax.pad(x, np.array(0, x.dtype), config)
    rest = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pairs)
    if fill == "constant" or not any(lo or hi for lo, hi in rest):
        return x, rest
    if any(size == 0 for size in x.shape[1:-1]):
        raise ValueError(
            f"`{name}` of spatial shape {tuple(x.shape[1:-1])} (after cropping) has nothing "
            f"to fill {fill!r} padding from"
        )
    x = jnp.pad(x, [(0, 0), *rest, (0, 0)], mode=fill)
    return x, ((0, 0),) * len(pairs)


def ceil_mode_extra(
    in_spatial: Sequence[int],
    pairs: Sequence[tuple[int, int]],
    extents: Sequence[int],
    stride: Sequence[int],
) -> tuple[int, ...]:
    """Extra high-side cells that PyTorch's ``ceil_mode`` adds per dim.

    The output is ``ceil((in + low + high - e) / stride) + 1``, less one when the last
    window would start past the input and its low padding (it would cover padding only).
    """
    extra = []
    for size, (lo, hi), e, s in zip(in_spatial, pairs, extents, stride, strict=True):
        span = size + lo + hi - e
        # A window wider than the padded input still gets one output when it starts inside
        # (PyTorch's rule); a span shorter than minus a stride gets none.
        out = max(-(-span // s) + 1, 0)
        if out and (out - 1) * s >= size + lo:
            out -= 1
        extra.append(max((out - 1) * s + e - (size + lo + hi), 0) if out else 0)
    return tuple(extra)


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
    13 (VALID, 2) per dim; a dim whose kernel is larger than the padded input gives 0.

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
        # A kernel larger than the padded input leaves no output, as in lax.
        out.append(max((size + lo + hi - k) // s + 1, 0))
    return tuple(out)
