"""Finite-difference gradient checks: central differences in float64 versus ``jax.grad``.

For a scalar function ``f(*args)``, every floating-point leaf of the chosen arguments
(arrays, or pytrees such as a Flax params dict) is checked entry by entry: all entries of
a small leaf, a seeded random sample of a large one. Everything runs under
``jax.enable_x64(True)`` with float inputs cast to float64: with the default step
``eps = 1e-6`` a central difference has a rounding error of about ``1e-10 * |f|`` and a
truncation error of about ``1e-13`` times the third derivative, far below the default
``rtol = 1e-5``, so a failure is a gradient bug rather than noise. ``f`` must be smooth
within ``eps`` of the inputs: keep them away from kinks (ReLU at 0, ties in a max,
bilinear sampling at integer positions), where the check rightly fails.

Error measure, per checked entry with numeric derivative ``n`` and analytic ``a``::

    abs_err = |n - a|
    rel_err = abs_err / max(|n|, |a|, atol / rtol)

and the entry passes when ``rel_err <= rtol``, i.e. ``abs_err <= max(atol, rtol * max(|n|,
|a|))``. The floor ``atol / rtol`` keeps entries whose true derivative is (close to) zero
from failing on rounding noise. A leaf passes when all its checked entries pass; a NaN
in either derivative fails.

Example::

    report = check_grads(lambda x, w: jnp.sum(conv(x, w) * ct), (x, w))
    print(format_report(report))
    assert_grads_close(lambda x, w: jnp.sum(conv(x, w) * ct), x, w)   # raises on failure
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

__all__ = [
    "GradcheckReport",
    "LeafResult",
    "assert_grads_close",
    "check_grads",
    "check_model_grads",
    "format_report",
]


@dataclasses.dataclass(frozen=True)
class LeafResult:
    """The check of one leaf.

    Attributes:
      path: where the leaf sits, e.g. ``"x"`` or ``"params/Conv_0/kernel"``: the argument's
        name (from ``f``'s signature, else ``argN``) then the pytree keys, ``/``-separated.
      shape: the leaf's shape.
      dtype: the leaf's dtype as given (it is checked in float64).
      size: number of entries of the leaf.
      checked: number of entries checked (``size`` or the sample size); 0 when skipped.
      max_abs_err: max over checked entries of ``|numeric - analytic|``.
      max_rel_err: max over checked entries of the relative error (module docstring).
      worst_index: index of the entry with the largest relative error.
      passed: ``max_rel_err <= rtol``; ``True`` for skipped leaves (nothing failed).
      skipped: the leaf is not floating point (ints, bools), so it has no gradient.
    """

    path: str
    shape: tuple[int, ...]
    dtype: str
    size: int
    checked: int
    max_abs_err: float
    max_rel_err: float
    worst_index: tuple[int, ...] | None
    passed: bool
    skipped: bool = False


@dataclasses.dataclass(frozen=True)
class GradcheckReport:
    """Per-leaf results of :func:`check_grads` and the settings they were obtained with."""

    rows: tuple[LeafResult, ...]
    eps: float
    rtol: float
    atol: float
    seed: int

    @property
    def passed(self) -> bool:
        """True when no checked leaf failed."""
        return all(row.passed for row in self.rows)

    @property
    def failed(self) -> tuple[LeafResult, ...]:
        """The leaves that failed."""
        return tuple(row for row in self.rows if not row.passed)

    @property
    def max_rel_err(self) -> float:
        """The largest relative error over all checked leaves."""
        return max(row.max_rel_err for row in self.rows if not row.skipped)


def check_grads(
    f: Callable[..., Any],
    args: Sequence[Any],
    *,
    argnums: int | Sequence[int] | None = None,
    eps: float = 1e-6,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    max_entries: int = 64,
    seed: int = 0,
    batch_size: int = 0,
    arg_names: Sequence[str] | None = None,
) -> GradcheckReport:
    """Compare reverse-mode gradients of scalar ``f(*args)`` with central differences.

    Args:
      f: function of the positional ``args`` returning a real scalar. It must compute in
        float64 when given float64 inputs (a float32 result raises ``ValueError``).
      args: the positional arguments, a tuple; each may be an array or a pytree.
        Float leaves of all arguments are cast to float64; non-float leaves are passed
        through unchanged (and reported as skipped when they belong to ``argnums``).
      argnums: which arguments to differentiate (default: all).
      eps: finite-difference step, absolute, applied to one entry at a time.
      rtol, atol: tolerance; see the module docstring for the exact criterion.
      max_entries: leaves with more entries are checked on a random sample of this size.
      seed: seeds the sample (leaf ``k`` uses ``numpy.random.default_rng((seed, k))``),
        so the same call checks the same entries.
      batch_size: how many entries' differences are evaluated together (``jax.lax.map``
        over ``jax.vmap``); 0 evaluates all at once, fastest for ops; a positive value
        bounds memory when ``f`` is a big model (the default vmaps ``f`` over
        ``2 * max_entries * leaves`` perturbed inputs).
      arg_names: display names of the arguments (default: from ``f``'s signature);
        an empty name drops the prefix from the paths.

    Returns:
      A :class:`GradcheckReport` with one row per leaf of the chosen arguments.
    """
    args = _check_args(args)
    argnums = _check_argnums(argnums, len(args))
    _check_settings(eps=eps, rtol=rtol, atol=atol, max_entries=max_entries, batch_size=batch_size)
    names = _arg_names(f, len(args)) if arg_names is None else tuple(arg_names)
    if len(names) != len(args):
        raise ValueError(f"`arg_names` must name all {len(args)} arguments; got {names!r}")

    with jax.enable_x64(True):
        args64 = jax.tree.map(_to_float64, tuple(args))
        path_leaves, treedef = jax.tree_util.tree_flatten_with_path(args64)
        original = jax.tree.leaves(tuple(args))
        leaves = [leaf for _, leaf in path_leaves]
        chosen = [k for k, (path, _) in enumerate(path_leaves) if path[0].idx in argnums]
        diff = [k for k in chosen if _is_float(original[k])]
        if not diff:
            raise ValueError(
                f"no floating-point leaf to check in the arguments {argnums} of "
                f"{_name(f)}; leaf dtypes: {[_dtype_name(original[k]) for k in chosen]}"
            )

        def g(diff_leaves: list[jax.Array]) -> jax.Array:
            full = list(leaves)
            for k, leaf in zip(diff, diff_leaves, strict=True):
                full[k] = leaf
            return f(*jax.tree.unflatten(treedef, full))

        diff_leaves = [leaves[k] for k in diff]
        _check_scalar_output(f, jax.eval_shape(g, diff_leaves))
        samples = [
            _sample(leaves[k].size, max_entries, np.random.default_rng((seed, k))) for k in diff
        ]
        # All leaves as one flat vector, so that one compiled function serves every leaf.
        flat, unravel = ravel_pytree(diff_leaves)
        starts = np.cumsum([0] + [leaf.size for leaf in diff_leaves])
        index = np.concatenate([s + start for s, start in zip(samples, starts[:-1], strict=True)])
        analytic, numeric = _gradients(lambda v: g(unravel(v)), flat, index, eps, batch_size)
        bounds = np.cumsum([0] + [s.size for s in samples])

        rows = []
        for k in chosen:
            label = _path_name(names, path_leaves[k][0])
            if k not in diff:
                rows.append(_skipped_row(label, original[k]))
                continue
            j = diff.index(k)
            part = slice(bounds[j], bounds[j + 1])
            rows.append(
                _compare(
                    label,
                    original[k],
                    leaves[k].shape,
                    samples[j],
                    numeric[part],
                    analytic[part],
                    rtol,
                    atol,
                )
            )
    return GradcheckReport(rows=tuple(rows), eps=eps, rtol=rtol, atol=atol, seed=seed)


def check_model_grads(
    loss_fn: Callable[..., Any], params: Any, *args: Any, **kwargs: Any
) -> GradcheckReport:
    """:func:`check_grads` of ``loss_fn(params, *args)`` with respect to ``params`` only.

    Paths are the params' own keys (e.g. ``"params/Conv_0/kernel"`` for a Flax variables
    dict), without an argument-name prefix. ``kwargs`` go to :func:`check_grads`.
    """
    names = ("",) + tuple(f"arg{i}" for i in range(1, len(args) + 1))
    return check_grads(loss_fn, (params, *args), argnums=0, arg_names=names, **kwargs)


def assert_grads_close(f: Callable[..., Any], *args: Any, **kwargs: Any) -> GradcheckReport:
    """Raise ``AssertionError`` with the formatted report unless ``f``'s gradients check.

    ``args`` are ``f``'s positional arguments; ``kwargs`` go to :func:`check_grads`.
    Returns the report when it passes.
    """
    report = check_grads(f, args, **kwargs)
    if not report.passed:
        raise AssertionError(f"gradient check of {_name(f)} failed:\n{format_report(report)}")
    return report


def format_report(report: GradcheckReport) -> str:
    """A per-leaf table with aligned columns, then one overall ``PASS``/``FAIL`` line."""
    header = (
        "leaf",
        "shape",
        "dtype",
        "checked",
        "max abs err",
        "max rel err",
        "worst at",
        "status",
    )
    body = [_row_cells(row) for row in report.rows]
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = (cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        return "  ".join(padded).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    lines = [line(header), rule, *(line(cells) for cells in body), rule]
    settings = f"rtol {report.rtol:g}, atol {report.atol:g}, eps {report.eps:g}"
    if report.passed:
        checked = sum(not row.skipped for row in report.rows)
        lines.append(
            f"PASS: {_leaves(checked)} checked, max rel err {report.max_rel_err:.2e} ({settings})"
        )
    else:
        names = ", ".join(row.path for row in report.failed)
        lines.append(f"FAIL: {_leaves(len(report.failed))} above tolerance ({settings}): {names}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- internals


def _gradients(
    h: Callable[[jax.Array], jax.Array],
    flat: jax.Array,
    index: np.ndarray,
    eps: float,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Analytic and central-difference derivatives of ``h`` at the entries ``index``.

    Both come from one jitted function: one compilation per check, which is most of the
    cost of checking a small op.
    """

    def both(flat: jax.Array, index: jax.Array) -> tuple[jax.Array, jax.Array]:
        def central(i: jax.Array) -> jax.Array:
            plus, minus = flat.at[i].add(eps), flat.at[i].add(-eps)
            # Divide by the step actually taken, after rounding of flat +- eps.
            return (h(plus) - h(minus)) / (plus[i] - minus[i])

        return jax.grad(h)(flat)[index], jax.lax.map(central, index, batch_size=batch_size)

    analytic, numeric = jax.jit(both)(flat, jnp.asarray(index))
    return np.asarray(analytic), np.asarray(numeric)


def _compare(
    label: str,
    original: Any,
    shape: tuple[int, ...],
    index: np.ndarray,
    numeric: np.ndarray,
    analytic: np.ndarray,
    rtol: float,
    atol: float,
) -> LeafResult:
    """One leaf's row from the derivatives at its checked flat entries ``index``."""
    abs_err = np.abs(numeric - analytic)
    scale = np.maximum(np.maximum(np.abs(numeric), np.abs(analytic)), atol / rtol)
    rel_err = abs_err / np.maximum(scale, np.finfo(np.float64).tiny)
    worst = int(np.argmax(rel_err))  # a NaN counts as the maximum
    max_rel = float(rel_err[worst])
    return LeafResult(
        path=label,
        shape=tuple(shape),
        dtype=_dtype_name(original),
        size=int(np.prod(shape, dtype=np.int64)),
        checked=int(index.size),
        max_abs_err=float(np.max(abs_err)),
        max_rel_err=max_rel,
        worst_index=tuple(int(i) for i in np.unravel_index(index[worst], shape)),
        passed=bool(max_rel <= rtol),
    )


def _skipped_row(label: str, leaf: Any) -> LeafResult:
    shape = tuple(np.shape(leaf))
    return LeafResult(
        path=label,
        shape=shape,
        dtype=_dtype_name(leaf),
        size=int(np.prod(shape, dtype=np.int64)),
        checked=0,
        max_abs_err=0.0,
        max_rel_err=0.0,
        worst_index=None,
        passed=True,
        skipped=True,
    )


def _row_cells(row: LeafResult) -> tuple[str, ...]:
    shape = str(row.shape)
    if row.skipped:
        return (row.path, shape, row.dtype, "-", "-", "-", "-", "skipped")
    return (
        row.path,
        shape,
        row.dtype,
        f"{row.checked}/{row.size}",
        f"{row.max_abs_err:.2e}",
        f"{row.max_rel_err:.2e}",
        str(row.worst_index),
        "pass" if row.passed else "FAIL",
    )


def _leaves(n: int) -> str:
    return f"{n} leaf" if n == 1 else f"{n} leaves"


def _sample(size: int, max_entries: int, rng: np.random.Generator) -> np.ndarray:
    """All flat indices of a small leaf, else ``max_entries`` distinct ones, sorted."""
    if size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def _is_float(leaf: Any) -> bool:
    try:
        return bool(jnp.issubdtype(jnp.result_type(leaf), jnp.floating))
    except TypeError:  # not an array-like (e.g. a string passed through to f)
        return False


def _to_float64(leaf: Any) -> Any:
    return jnp.asarray(leaf, jnp.float64) if _is_float(leaf) else leaf


def _dtype_name(leaf: Any) -> str:
    try:
        return str(jnp.result_type(leaf))
    except TypeError:
        return type(leaf).__name__


def _path_name(names: Sequence[str], path: tuple[Any, ...]) -> str:
    """``argname/key/key``; the first path entry is the argument's position."""
    keys = jax.tree_util.keystr(path[1:], simple=True, separator="/")
    return "/".join(part for part in (names[path[0].idx], keys) if part) or "<leaf>"


def _arg_names(f: Callable[..., Any], n: int) -> tuple[str, ...]:
    """Names of ``f``'s first ``n`` positional parameters, ``argN`` where unknown."""
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        params = []
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return tuple(positional[i] if i < len(positional) else f"arg{i}" for i in range(n))


def _name(f: Callable[..., Any]) -> str:
    return getattr(f, "__name__", repr(f))


def _check_args(args: Any) -> tuple[Any, ...]:
    if not isinstance(args, tuple | list):
        raise ValueError(
            f"`args` must be a tuple of f's positional arguments; got {type(args).__name__}"
        )
    return tuple(args)


def _check_argnums(argnums: int | Sequence[int] | None, n: int) -> tuple[int, ...]:
    if argnums is None:
        return tuple(range(n))
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums or any(not isinstance(i, int) or not 0 <= i < n for i in nums):
        raise ValueError(f"`argnums` must be ints in [0, {n}) for {n} arguments; got {argnums!r}")
    return nums


def _check_settings(
    *, eps: float, rtol: float, atol: float, max_entries: int, batch_size: int
) -> None:
    if not eps > 0:
        raise ValueError(f"`eps` must be > 0; got {eps!r}")
    if not rtol > 0:
        raise ValueError(f"`rtol` must be > 0; got {rtol!r}")
    if not atol >= 0:
        raise ValueError(f"`atol` must be >= 0; got {atol!r}")
    if max_entries < 1:
        raise ValueError(f"`max_entries` must be >= 1; got {max_entries!r}")
    if batch_size < 0:
        raise ValueError(f"`batch_size` must be >= 0 (0: all at once); got {batch_size!r}")


def _check_scalar_output(f: Callable[..., Any], out: Any) -> None:
    if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
        got = jax.tree.map(lambda s: f"{s.dtype}{list(s.shape)}", out)
        raise ValueError(f"f ({_name(f)}) must return a scalar; it returned {got}")
    if out.dtype != jnp.float64:
        raise ValueError(
            f"f ({_name(f)}) must return a float64 scalar when given float64 inputs (finite "
            f"differences need the precision); it returned {out.dtype}. Does f cast its inputs?"
        )
