"""Validation shared by the layers: constructor fields and input shapes.

Layers check what the ops cannot see: their own fields (at construction) and whether the
input fits the parameters they are about to create. Stride, padding and dilation are
validated by the ops themselves.
"""

from __future__ import annotations

from collections.abc import Sequence

from cnnjax.ops._args import as_tuple

KernelSize = int | Sequence[int]


def check_positive_int(name: str, value: object) -> None:
    """Raise unless ``value`` is an int >= 1 (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}` must be a positive int; got {value!r}")


def check_kernel_size(kernel_size: KernelSize, ranks: Sequence[int] = (1, 2, 3)) -> None:
    """Raise unless ``kernel_size`` is a positive int or one positive int per spatial dim."""
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
        check_positive_int("kernel_size", kernel_size)
        return
    n = len(kernel_size) if isinstance(kernel_size, Sequence) else -1
    if n not in ranks:
        raise ValueError(
            f"`kernel_size` must be an int or a sequence of {' or '.join(map(str, ranks))} "
            f"ints (one per spatial dim); got {kernel_size!r}"
        )
    as_tuple("kernel_size", kernel_size, n)


def resolve_kernel_size(
    kernel_size: KernelSize, x_shape: Sequence[int], ranks: Sequence[int] = (1, 2, 3)
) -> tuple[int, ...]:
    """One kernel size per spatial dim of ``x``: ``(N, *spatial, C)``.

    A sequence fixes the spatial rank; an int takes it from the input.
    """
    x_shape = tuple(x_shape)
    if isinstance(kernel_size, int):
        n = len(x_shape) - 2
        if n not in ranks:
            raise ValueError(
                f"`x` must have shape (N, *spatial, C) with {' or '.join(map(str, ranks))} "
                f"spatial dims; got shape {x_shape}"
            )
    else:
        n = len(kernel_size)
        if len(x_shape) != n + 2:
            raise ValueError(
                f"`x` must have shape (N, *spatial, C) with {n} spatial dims to match "
                f"kernel_size={tuple(kernel_size)}; got shape {x_shape}"
            )
    return as_tuple("kernel_size", kernel_size, n)


def check_divides(name: str, groups: int, what: str, channels: int) -> None:
    """Raise unless ``groups`` divides ``channels`` (``what`` names the channel count)."""
    if channels % groups:
        raise ValueError(f"`{name}`={groups} must divide {what}={channels}")
