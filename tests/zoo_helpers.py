"""What the model-zoo tests share: hand counts of parameters written from each layer's
definition, a traced model's shapes, and the overrides that make an experiment a tiny run.

A conv from ``c_in`` to ``c_out`` channels in ``g`` groups has ``prod(kernel) * (c_in / g) *
c_out`` weights plus ``c_out`` biases; a dense layer ``n_in * n_out + n_out``; batch norm
``2 * C`` (scale and shift; its running statistics are not parameters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import pytest

# rbg compiles several times faster than threefry on CPU; the values do not matter here.
KEY = jax.random.key(0, impl="rbg")


# Every registered model, on a batch of 2 of the uint8 inputs it is built for (the 1998
# LeNet needs 32x32 MNIST, the clip net clips, the sequence nets images).
MODEL_INPUTS = {
    "alexnet_small": (2, 32, 32, 3),
    "conv1d_seq": (2, 28, 28, 1),
    "conv3d_clips": (2, 8, 32, 32, 1),
    "conv_autoencoder": (2, 28, 28, 1),
    "deformable_cnn": (2, 28, 28, 1),
    "dilated_cnn": (2, 28, 28, 1),
    "inception_small": (2, 32, 32, 3),
    "keras_book_cnn": (2, 28, 28, 1),
    "lenet5": (2, 28, 28, 1),
    "lenet5_classic": (2, 32, 32, 1),
    "mobilenet_small": (2, 32, 32, 3),
    "nin": (2, 28, 28, 1),
    "slot_cnn": (2, 28, 28, 1),
    "tf_tutorial_cnn": (2, 28, 28, 1),
}

# The models whose per-model tests take longest on 2 cores (float64 gradient checks of
# 16-47 s each): those cases run in the slow pass (`-m slow`), the rest in the default one.
SLOW_MODELS = frozenset({"alexnet_small", "inception_small", "mobilenet_small", "nin"})


def by_model(cases, ids=None) -> list:
    """``pytest.param`` per case (a model name, or a tuple that starts with one), marked
    slow for the :data:`SLOW_MODELS`; ``ids``: one id per case, or pytest's own."""
    params = []
    for i, case in enumerate(cases):
        values = case if isinstance(case, tuple) else (case,)
        marks = [pytest.mark.slow] if values[0] in SLOW_MODELS else []
        params.append(pytest.param(*values, marks=marks, id=None if ids is None else ids[i]))
    return params


# 8 generated examples per split (tfds mock data: random images of the dataset's shape):
# 2 steps of 4, one evaluation, one checkpoint.
TINY_RUN = [
    "--config.batch_size=4",
    "--config.eval_batch_size=4",
    "--config.total_epochs=None",
    "--config.total_steps=2",
    "--config.schedule.warmup_epochs=None",
    "--config.schedule.warmup_steps=1",
    "--config.dataset.download=False",  # never try the network from a test
    "--config.checkpoint.async_save=False",
]


@pytest.fixture
def rbg_keys():
    """The trainer's keys from the rbg PRNG, whose random init compiles several times
    faster than threefry's (the values do not matter here)."""
    before = jax.config.values["jax_default_prng_impl"]
    jax.config.update("jax_default_prng_impl", "rbg")
    yield
    jax.config.update("jax_default_prng_impl", before)


def conv(
    kernel: int | Sequence[int], c_in: int, c_out: int, groups: int = 1, bias: bool = True
) -> int:
    """Parameters of a conv; an int ``kernel`` is ``kernel x kernel``."""
    taps = kernel * kernel if isinstance(kernel, int) else math.prod(kernel)
    return taps * (c_in // groups) * c_out + (c_out if bias else 0)


def dense(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def batch_norm(c: int) -> int:
    return 2 * c


def count(tree) -> int:
    """Entries over all leaves of a pytree of arrays or shapes."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def trace(model, input_shape: tuple[int, ...]):
    """(params, outputs, output shape of each top-level layer without the batch dim) of
    ``model`` on an input of ``input_shape``, traced only (no FLOPs spent)."""

    def forward(x):
        variables = model.init(KEY, x)
        out, state = model.apply(
            variables, x, capture_intermediates=True, mutable=["intermediates"]
        )
        return variables["params"], out, state["intermediates"]

    params, out, inter = jax.eval_shape(forward, jax.ShapeDtypeStruct(input_shape, jnp.float32))
    # Layers record a dict with their "__call__" outputs; values sown by hand do not.
    layers = {k: v["__call__"][0].shape[1:] for k, v in inter.items() if isinstance(v, dict)}
    return params, out, layers
