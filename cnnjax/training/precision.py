"""Mixed precision: the compute dtype of the train and eval steps, and float16 loss scaling.

``config.dtype`` names the dtype the model computes in. What is stored stays float32:
parameters, optimizer state, batch-norm running statistics and the loss scale. Each
step casts the parameters and the preprocessed inputs to the compute dtype
(:func:`cast_floating`) inside the differentiated function, so gradients come back
float32 (the gradient of a cast is the cast back); the model's outputs are cast to
float32 before the task's loss, so the loss, its mean and the softmax run in float32.

Batch statistics are *not* cast: Flax's ``BatchNorm`` computes batch moments in float32
whatever its input, and takes its output dtype from the input and its scale and bias, so
float32 running statistics cost nothing. Rounded to bfloat16's 8 significant bits before
every momentum update, a running average stops moving once an update is below half a
unit in the last place: with momentum 0.99, anywhere within 50 units (20-40 %) of the
truth (one started at 1.0 stays at 1.0 while the batches' moment is 1.3).

Dynamic loss scaling (float16 only; bfloat16 has float32's exponent range): float16
gradients below ~6e-8 flush to zero, so the loss is multiplied by ``scale`` before the
backward pass and the float32 gradients are divided by it afterwards. The scale follows
the rules of TensorFlow/Keras's ``LossScaleOptimizer``, jmp's ``DynamicLossScale`` and
PyTorch's ``GradScaler`` (:func:`next_loss_scale`): it starts high (:data:`INITIAL_SCALE`),
is halved (never below :data:`MIN_SCALE`) after a step whose gradients are not finite,
and doubled after :data:`GROWTH_PERIOD` consecutive steps with finite gradients. The
train step skips the update of a step whose gradients overflowed while the scale could
still be lowered (:func:`overflowed`): that is the scaler at work, not divergence.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any

DTYPES = ("float32", "bfloat16", "float16")

# 2**15 is half of float16's largest value (65504), the default of TensorFlow, Keras and
# jmp: a scale that is too high costs a few skipped steps; one that is too low is raised
# only every GROWTH_PERIOD steps.
INITIAL_SCALE = 2.0**15
GROWTH_PERIOD = 2000
FACTOR = 2.0
# Gradients that overflow even unscaled are a diverging run's, not the scaler's business.
MIN_SCALE = 1.0
_MAX_SCALE = float(np.finfo(np.float32).max)


def compute_dtype(name: str) -> jnp.dtype:
    """The dtype named ``name`` (one of :data:`DTYPES`)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {name!r}")
    return jnp.dtype(name)


def cast_floating(tree: PyTree, dtype: jnp.dtype | str) -> PyTree:
    """``tree`` with every floating-point leaf cast to ``dtype``; integer and boolean
    leaves (step counters, labels, PRNG keys) as they are. A leaf already in ``dtype``
    is returned unchanged (no convert op is traced)."""
    return jax.tree.map(
        lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree
    )


def uses_loss_scale(dtype: str) -> bool:
    """Whether a run computing in ``dtype`` needs dynamic loss scaling (float16 only)."""
    return compute_dtype(dtype) == jnp.float16


def init_loss_scale(dtype: str, scale: float = INITIAL_SCALE) -> dict[str, jax.Array]:
    """The loss-scale state of a fresh run: ``{}`` unless ``dtype`` is float16, else
    ``scale`` (``()`` float32, what the loss is multiplied by) and ``counter`` (``()``
    int32, consecutive steps with finite gradients since the scale last changed)."""
    if not uses_loss_scale(dtype):
        return {}
    return {"scale": jnp.asarray(scale, jnp.float32), "counter": jnp.zeros((), jnp.int32)}


def scale_loss(loss: jax.Array, loss_scale: dict[str, jax.Array]) -> jax.Array:
    """``loss`` (``()`` float32) times the scale (``loss`` itself without one)."""
    return loss * loss_scale["scale"] if loss_scale else loss


def unscale_grads(grads: PyTree, loss_scale: dict[str, jax.Array]) -> PyTree:
    """Gradients of the scaled loss back to those of the loss (float32 leaves)."""
    if not loss_scale:
        return grads
    inverse = 1.0 / loss_scale["scale"]
    return jax.tree.map(lambda g: g * inverse.astype(g.dtype), grads)


def overflowed(
    loss_scale: dict[str, jax.Array], *, loss_finite: jax.Array, grads_finite: jax.Array
) -> jax.Array:
    """``()`` bool: the gradients overflowed where the scaler can help: the loss (float32)
    is finite, the gradients are not, and the scale is above :data:`MIN_SCALE`. A
    non-finite loss means the forward pass itself overflowed, which no scale cures."""
    return loss_finite & ~grads_finite & (loss_scale["scale"] > MIN_SCALE)


def next_loss_scale(
    loss_scale: dict[str, jax.Array],
    grads_finite: jax.Array,
    *,
    period: int = GROWTH_PERIOD,
    factor: float = FACTOR,
    min_scale: float = MIN_SCALE,
) -> dict[str, jax.Array]:
    """The loss-scale state after a step whose gradients were finite (``grads_finite``,
    ``()`` bool) or not.

    Non-finite gradients: the scale is divided by ``factor`` (not below ``min_scale``)
    and the counter restarts at 0. Finite: the counter goes up by one; when it reaches
    ``period`` the scale is multiplied by ``factor`` (capped at float32's largest value)
    and the counter restarts. So the scale doubles on the ``period``-th consecutive
    finite step, as in jmp and PyTorch.
    """
    scale, counter = loss_scale["scale"], loss_scale["counter"] + 1
    grow = counter >= period
    grown = jnp.where(grow, jnp.minimum(scale * factor, _MAX_SCALE), scale)
    return {
        "scale": jnp.where(grads_finite, grown, jnp.maximum(scale / factor, min_scale)),
        "counter": jnp.where(grads_finite & ~grow, counter, 0).astype(jnp.int32),
    }
