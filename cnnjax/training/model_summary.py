"""A table of a Flax model's layers: name, output shape, parameters.

Shapes come from ``jax.eval_shape``, so nothing is computed or allocated. Every submodule
that is called appears, in call order, indented by depth; its parameter count includes
those of its children. Functions that are not modules (``nn.relu``, reshapes) do not.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def layer_rows(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[str, str, int]]:
    """``(layer, output shape, parameters)`` for each called submodule, then the model.

    Args:
      model: an unbound Flax module taking ``(x, train=False)``.
      input_shape: ``(N, H, W, C)`` of one input batch.
    """
    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    order: list[tuple[str, ...]] = []  # module paths in call order, read while tracing

    def run(x):
        variables = model.init(jax.random.key(0), x, train=False)
        _, state = model.apply(
            variables, x, train=False, capture_intermediates=True, mutable=["intermediates"]
        )
        order.extend(_calls(state["intermediates"]))
        return variables["params"], state["intermediates"]

    # eval_shape returns dicts with sorted keys, hence the order recorded during tracing.
    params, intermediates = jax.eval_shape(run, x)
    rows = [
        (
            "  " * (len(path) - 1) + path[-1],
            _shape(_subtree(intermediates, path)["__call__"][0]),
            _count(_subtree(params, path)),
        )
        for path in order
        if path
    ]
    rows.append((type(model).__name__, _shape(intermediates["__call__"][0]), _count(params)))
    return rows


def _calls(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Paths of the called modules in ``tree``, each before its children, siblings in call
    order (Flax records them in dicts, which keep insertion order)."""
    found = [prefix] if "__call__" in tree else []
    for key, value in tree.items():
        if key != "__call__":
            found.extend(_calls(value, (*prefix, key)))
    return found


def _subtree(params: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        if key not in params:
            return {}
        params = params[key]
    return params


def _count(tree: Any) -> int:
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree)))


def _shape(out: Any) -> str:
    shapes = [tuple(leaf.shape) for leaf in jax.tree.leaves(out)]
    return ", ".join(str(s) for s in shapes)


def format_table(rows: list[tuple[str, str, int]]) -> str:
    """The rows as an aligned text table; the last row (the whole model) is the total."""
    header = ("layer", "output shape", "params")
    cells = [header] + [(n, s, f"{p:,}") for n, s, p in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    rule = "-" * (sum(widths) + 4)

    def line(row: tuple[str, str, str]) -> str:
        return f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:>{widths[2]}}"

    body = [line(r) for r in cells[1:-1]]
    return "\n".join([line(header), rule, *body, rule, line(cells[-1])])
