"""Every module call of a forward pass, recorded with ``flax.linen.intercept_methods``.

The summary traces abstractly (``jax.eval_shape``: inputs and outputs are tracers with
shapes only); the pictures trace eagerly (concrete arrays). Both read the same records.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax

from cnnjax.layers import (
    Conv,
    ConvMaxPool,
    ConvTranspose,
    DeformableConv,
    DepthwiseConv,
    SeparableConv,
    SpatiallySeparableConv,
)

# The layers that convolve: they carry the FLOPs, and their outputs are the feature maps.
CONV_LAYERS = (
    Conv,
    ConvMaxPool,
    ConvTranspose,
    DeformableConv,
    DepthwiseConv,
    SeparableConv,
    SpatiallySeparableConv,
)


@dataclasses.dataclass
class Call:
    """One ``__call__`` of a module.

    Attributes:
      path: the module's path from the model, e.g. ``("inception1", "b3_3x3")``; ``()``
        for the model itself.
      module: the bound module (its class and fields give the layer's geometry).
      input: the first positional argument (``None`` when there is none).
      output: what the call returned.
      parent: index of the enclosing call in the list of calls (``None`` for the model).
      children: indices of the calls made directly inside this one, in call order.
    """

    path: tuple[str, ...]
    module: nn.Module
    input: Any
    output: Any = None
    parent: int | None = None
    children: list[int] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        """The module's own name, or the model's class name."""
        return self.path[-1] if self.path else type(self.module).__name__

    @property
    def is_conv(self) -> bool:
        return isinstance(self.module, CONV_LAYERS)


def trace_calls(run: Callable[[], Any]) -> tuple[Any, list[Call]]:
    """``run()`` and the ``__call__`` of every module it made, in call order (each call
    before the calls inside it).

    The records keep their inputs and outputs alive, so ``id()`` of those arrays is unique
    among them: the receptive-field pass follows the data by identity.
    """
    calls: list[Call] = []
    stack: list[int] = []

    def interceptor(next_fun, args, kwargs, context):
        if context.method_name != "__call__":  # helper methods are part of their __call__
            return next_fun(*args, **kwargs)
        parent = stack[-1] if stack else None
        call = Call(context.module.path, context.module, args[0] if args else None, parent=parent)
        index = len(calls)
        calls.append(call)
        if parent is not None:
            calls[parent].children.append(index)
        stack.append(index)
        try:
            call.output = next_fun(*args, **kwargs)
        finally:
            stack.pop()
        return call.output

    with nn.intercept_methods(interceptor):
        result = run()
    return result, calls


def subtree(tree: Mapping, path: tuple[str, ...]) -> Mapping:
    """``tree[path[0]][path[1]]...``, or ``{}`` where the path is absent (no parameters)."""
    for key in path:
        if not isinstance(tree, Mapping) or key not in tree:
            return {}
        tree = tree[key]
    return tree


def seed_key(seed: int) -> jax.Array:
    """The PRNG key of the tools. ``rbg``: its initialisers compile several times faster
    than the default ``threefry`` on CPU (seconds per model); the values do not matter."""
    return jax.random.key(seed, impl="rbg")


def init_variables(model: nn.Module, key: jax.Array, x: jax.Array) -> dict:
    """``model.init`` for inputs like ``x (N, *spatial, C)``, jitted (eager
    initialisation dispatches and compiles op by op, several times slower)."""
    return jax.jit(functools.partial(model.init, train=False))(key, x)
