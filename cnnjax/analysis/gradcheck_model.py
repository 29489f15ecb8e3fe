"""Finite-difference check of a whole model's loss gradient, reported per layer.

:func:`check_model` initialises the model from a seed, moves every parameter off its
initial value by a little seeded noise (``jitter``), and compares ``jax.grad`` of the loss
on a tiny batch with central differences in float64
(:func:`cnnjax.gradcheck.check_model_grads`): every entry of small parameter leaves, a
seeded sample of ``max_entries`` of large ones. The jitter matters: zero-initialised
parameters are special points (a :class:`~cnnjax.layers.DeformableConv` starts with zero
offsets, which put every sample on the integer grid where bilinear interpolation has
kinks).

The loss is the model's training objective, in training mode (``train=True``: batch norm
normalises with the batch's statistics, dropout drops a fixed seeded pattern):
softmax cross-entropy for a classifier (output ``(N, K)``), else half the mean squared
error against a seeded random target of the output's shape. :func:`format_by_layer`
prints the result, one group of rows per layer in call order, one row per parameter leaf.

Tolerances. ``eps = 1e-7``, ``rtol = 1e-3``, ``atol = 1e-5``: the tolerances of
``torch.autograd.gradcheck``, looser than the ``1e-5`` of the op-level checks, and a
smaller step, because ReLU and max-pool are not differentiable everywhere. In a model of
a few hundred thousand activations, one often lies within a step of ``1e-6`` of 0 (or of
a tie), and the central difference then averages two slopes: measured on
``mobilenet_small``, such a crossing moved a derivative by 2e-5 to 7e-4 relative. The
step of ``1e-7`` crosses ten times fewer kinks, and its rounding error stays far below
``atol`` (5e-7 absolute on ``alexnet_small``); a wrong gradient is off by far more than
``rtol`` (a missing term, a factor). Should a crossing still fail a check, another
``seed`` tells: a kink moves with the point, a wrong gradient fails at every point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from cnnjax.analysis._table import render
from cnnjax.analysis._trace import init_variables, seed_key
from cnnjax.gradcheck import GradcheckReport, LeafResult, check_model_grads

__all__ = ["BATCH_BYTES", "by_layer", "check_model", "format_by_layer"]

# Memory for the perturbed float64 copies of the parameters evaluated at once. Evaluating
# all of them in one vmap is several times faster than in batches (``lax.map``), so small
# models get that, and big ones (millions of parameters) batches that fit.
BATCH_BYTES = 2**28


def check_model(
    model: nn.Module,
    x: jax.Array,
    labels: jax.Array | None = None,
    *,
    seed: int = 0,
    jitter: float = 0.05,
    max_entries: int = 32,
    batch_size: int | None = None,
    eps: float = 1e-7,
    rtol: float = 1e-3,
    atol: float = 1e-5,
) -> GradcheckReport:
    """Gradient check of ``model``'s loss with respect to all its parameters.

    Args:
      model: a Flax module called as ``model.apply(variables, x, train=...)``.
      x: ``(N, *spatial, C)`` float inputs, a tiny batch (2 examples is plenty).
      labels: ``(N,)`` int classes when the model is a classifier; ``None``: random
        classes from ``seed``. Not used for other models.
      seed: seeds the initialisation, the jitter, the dropout pattern, random labels or
        target, and the sampled entries.
      jitter: standard deviation of the Gaussian noise added to every parameter.
      max_entries: parameter leaves with more entries are checked on a sample this big.
      batch_size: checked entries evaluated together (each needs two perturbed copies of
        all parameters); ``None``: as many as fit in :data:`BATCH_BYTES`.
      eps, rtol, atol: as for :func:`cnnjax.gradcheck.check_grads` (module docstring).

    Returns:
      The report, one row per parameter leaf (``"conv1/kernel"``), in the order the
      layers are called.
    """
    init_key, jitter_key, dropout_key, target_key = jax.random.split(seed_key(seed), 4)
    with jax.enable_x64(True):
        x = jnp.asarray(x, jnp.float64)
        variables = init_variables(model, init_key, x)
        params = jax.jit(_jitter)(variables["params"], jitter_key, jitter)
        state = {k: _to_float64(v) for k, v in variables.items() if k != "params"}
        apply = _apply_for_training(model, state, dropout_key)
        loss = _loss(apply)
        out = jax.eval_shape(apply, params, x)
        if out.ndim == 2:
            target = (
                jax.random.randint(target_key, out.shape[:1], 0, out.shape[1])
                if labels is None
                else jnp.asarray(labels)
            )
        else:
            target = jax.random.normal(target_key, out.shape, jnp.float64)
        if batch_size is None:
            batch_size = _batch_size(params, max_entries)
        report = check_model_grads(
            loss,
            params,
            x,
            target,
            eps=eps,
            rtol=rtol,
            atol=atol,
            max_entries=max_entries,
            seed=seed,
            batch_size=batch_size,
        )
        order = _creation_order(model, x)
    rows = sorted(report.rows, key=lambda row: order[row.path])
    return dataclasses.replace(report, rows=tuple(rows))


def by_layer(report: GradcheckReport) -> dict[str, list[LeafResult]]:
    """The report's rows grouped by layer (the path without the leaf name), in order."""
    groups: dict[str, list[LeafResult]] = {}
    for row in report.rows:
        groups.setdefault(_layer(row.path), []).append(row)
    return groups


def format_by_layer(report: GradcheckReport) -> str:
    """A table with one group of rows per layer, then one ``PASS``/``FAIL`` line."""
    header = (
        "layer",
        "param",
        "shape",
        "checked",
        "max abs err",
        "max rel err",
        "worst at",
        "status",
    )
    groups = by_layer(report)
    body = []
    for layer, rows in groups.items():
        for k, row in enumerate(rows):
            body.append((layer if k == 0 else "", row.path.rsplit("/", 1)[-1], *_cells(row)))
    table = render(header, body, right={3, 4, 5})
    settings = f"rtol {report.rtol:g}, atol {report.atol:g}, eps {report.eps:g}, seed {report.seed}"
    failed = [layer for layer, rows in groups.items() if not all(r.passed for r in rows)]
    if failed:
        verdict = (
            f"FAIL: {len(failed)} of {len(groups)} layers above tolerance ({settings}): "
            + ", ".join(failed)
        )
    else:
        verdict = (
            f"PASS: {len(report.rows)} parameter leaves in {len(groups)} layers, max "
            f"rel err {report.max_rel_err:.2e} ({settings})"
        )
    return f"{table}\n{verdict}"


# ----------------------------------------------------------------------------- internals


def _apply_for_training(
    model: nn.Module, state: Mapping, dropout_key: jax.Array
) -> Callable[[Mapping, jax.Array], jax.Array]:
    """``apply(params, x)``: the model's output in training mode with a fixed dropout key;
    updates of ``state`` (batch-norm running statistics) are dropped."""

    def apply(params: Mapping, x: jax.Array) -> jax.Array:
        out, _ = model.apply(
            {"params": params, **state},
            x,
            train=True,
            rngs={"dropout": dropout_key},
            mutable=list(state),
        )
        return out

    return apply


def _loss(apply: Callable[[Mapping, jax.Array], jax.Array]) -> Callable[..., jax.Array]:
    """``loss(params, x, target)``: cross-entropy against int labels ``(N,)`` for logits
    ``(N, K)``, else half the mean squared error against a float target."""

    def loss(params, x, target):
        out = apply(params, x)
        if out.ndim == 2:
            return optax.softmax_cross_entropy_with_integer_labels(out, target).mean()
        return 0.5 * jnp.mean((out - target) ** 2)

    return loss


def _batch_size(params: Mapping, max_entries: int) -> int:
    """Entries per batch so that their perturbed copies fit in BATCH_BYTES (0: all)."""
    leaves = jax.tree.leaves(params)
    n_params = sum(leaf.size for leaf in leaves)
    entries = sum(min(leaf.size, max_entries) for leaf in leaves)
    fits = BATCH_BYTES // (2 * 8 * n_params)
    return 0 if entries <= fits else max(1, fits)


def _jitter(params: Mapping, key: jax.Array, scale: float) -> Mapping:
    """``params`` plus ``scale`` x standard normal noise, in float64."""
    flat, unravel = ravel_pytree(_to_float64(params))
    return unravel(flat + scale * jax.random.normal(key, flat.shape, jnp.float64))


def _to_float64(tree: Mapping) -> Mapping:
    return jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a,
        tree,
    )


def _creation_order(model: nn.Module, x: jax.Array) -> dict[str, int]:
    """Position of each parameter path in creation order (layers in call order), read
    inside an abstract ``init``: ``jit`` and ``eval_shape`` return dicts with sorted keys."""
    paths: list[str] = []

    def init(x: jax.Array) -> None:
        paths.extend(_leaf_paths(model.init(seed_key(0), x, train=False)["params"]))

    jax.eval_shape(init, x)
    return {path: i for i, path in enumerate(paths)}


def _leaf_paths(tree: Mapping, prefix: str = "") -> list[str]:
    """``"a/b/c"`` paths of the leaves in the dicts' own (creation, i.e. call) order."""
    paths = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths.extend(_leaf_paths(value, f"{path}/") if isinstance(value, Mapping) else [path])
    return paths


def _layer(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else "(model)"


def _cells(row: LeafResult) -> tuple[str, ...]:
    return (
        str(row.shape),
        f"{row.checked}/{row.size}",
        f"{row.max_abs_err:.2e}",
        f"{row.max_rel_err:.2e}",
        str(row.worst_index),
        "pass" if row.passed else "FAIL",
    )
