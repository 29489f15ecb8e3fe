"""The identity whose derivative makes XLA materialise a cotangent.

Overlapping windows (max-pools, depthwise convolutions) read each cotangent once per
window that covers an input. XLA's CPU fusion copies a cheap producer of that cotangent
(the input gradient of a conv after a pool, itself a sum of shifted pads; the batch-norm
and ReLU derivatives after a depthwise conv) into each of those reads, recomputing it up
to 9x (for NiN's 3x3/2 pools and MobileNet's depthwise convs the largest ops of a train
step). A matmul's operands are always materialised, so the tangent goes through one with
an identity block: 8 multiply-adds per element, exact, except that an infinite cotangent
turns the other cotangents of its block of 8 channels into NaN.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax


@jax.custom_jvp
def cotangent_read_once(y: jax.Array) -> jax.Array:
    """``y`` (any shape, channels last), whose cotangent XLA computes once, into memory."""
    return y


@cotangent_read_once.defjvp
def _cotangent_read_once_jvp(primals, tangents):
    (y,), (dy,) = primals, tangents
    c = y.shape[-1]
    block = math.gcd(c, 8) if c % 2 == 0 else c  # a size-1 contraction would be fused again
    blocks = dy.reshape(*dy.shape[:-1], c // block, block)
    eye = jnp.eye(block, dtype=dy.dtype)
    out = lax.dot_general(blocks, eye, (((blocks.ndim - 1,), (0,)), ((), ())))
    return y, out.reshape(dy.shape)
