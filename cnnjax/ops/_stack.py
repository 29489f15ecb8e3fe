"""Stacking the taps of a window (a conv kernel's, a pool's) into one array on CPU."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

# XLA's CPU fusion fuses a concatenate of at most this many operands
# (``kMaxConcatenateArguments``).
MAX_FUSED_STACK = 8


def _stack_by_dim(taps: list[jax.Array], window: Sequence[int]) -> jax.Array:
    if len(window) == 1:
        return jnp.stack(taps, axis=-2)
    step = math.prod(window[1:])
    rows = [_stack_by_dim(taps[i * step : (i + 1) * step], window[1:]) for i in range(window[0])]
    return jnp.stack(rows, axis=-1 - len(window))


def stack_taps(taps: Sequence[jax.Array], window: Sequence[int]) -> jax.Array:
    """The taps of a window, each ``(..., C)`` and row-major over ``window``, stacked as
    ``(..., prod(window), C)``.

    XLA's CPU fusion leaves a concatenate of more than ``MAX_FUSED_STACK`` operands
    unfused, so a flat stack of 9 taps is written as one slice per tap and then copied.
    Stacked one window dim per level instead (3x3: three stacks of three taps, then a
    stack of those, on another axis so that XLA does not merge them back into one), no
    concatenate has more than ``window[i]`` operands and the stack is one fusion reading
    the taps' source; its transpose is one sum of slices. Windows of more than
    ``MAX_FUSED_STACK`` taps along some dim keep the flat stack.
    """
    taps = list(taps)
    if max(window) > MAX_FUSED_STACK:
        return jnp.stack(taps, axis=-2)
    y = _stack_by_dim(taps, window)
    return y.reshape(*y.shape[: -1 - len(window)], len(taps), y.shape[-1])
