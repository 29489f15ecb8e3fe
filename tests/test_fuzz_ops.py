"""Ops under fuzzing: hypothesis draws shapes, strides, paddings, dilations and groups for
``conv``, ``conv_transpose``, ``max_pool``, ``avg_pool``, ``depthwise_conv`` and
``deformable_conv2d``, and every draw must match the NumPy loops of ``tests/reference.py``
(deformable convolution: the loops of ``tests/test_ops_deformable.py``), or, where the
reference has no output, raise a ``ValueError`` that names the problem.

The default run draws a few examples per op with a fixed seed (``derandomize``), so it is
quick and repeatable; ``pytest -m slow`` (which ``.ci/run`` also runs) draws many more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import reference
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_ops_deformable import deform_conv_reference, explicit_pads

from cnnjax import ops

FEW, MANY = 15, 300
EXAMPLES = [FEW, pytest.param(MANY, marks=pytest.mark.slow)]


@dataclasses.dataclass(frozen=True)
class Case:
    """One draw: the op's arrays and keyword arguments, and the reference's."""

    arrays: tuple[np.ndarray, ...]
    kwargs: dict[str, Any]
    reference_kwargs: dict[str, Any]


def _check(
    op: Callable[..., Any], ref: Callable[..., np.ndarray], case: Case, *, tol: float = 1e-4
) -> None:
    """``op`` equals ``ref`` in float32 tolerance, or both have no output: then ``op``
    may return an empty array or raise a ValueError with a message."""
    try:
        arrays = (None if a is None else a.astype(np.float64) for a in case.arrays)
        expected = ref(*arrays, **case.reference_kwargs)
    except (ValueError, IndexError, ZeroDivisionError, RuntimeWarning):  # no output
        expected = None
    try:
        got = np.asarray(op(*case.arrays, **case.kwargs))
    except ValueError as e:
        assert expected is None or expected.size == 0, f"{case.kwargs}: {e}"
        assert str(e), "a ValueError without a message"
        return
    if expected is None:  # no output (e.g. the kernel is larger than the padded input)
        assert got.size == 0, f"{case.kwargs}: the reference has no output, the op {got.shape}"
        return
    assert got.shape == expected.shape, case.kwargs
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * scale, err_msg=str(case.kwargs))


def _normal(draw, shape: tuple[int, ...]) -> np.ndarray:
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _padding(draw, rank: int) -> Any:
    return draw(
        st.one_of(
            st.sampled_from(["SAME", "VALID"]),
            st.integers(0, 2),
            st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=rank,
                     max_size=rank).map(tuple),
        )
    )  # fmt: skip


@st.composite
def conv_cases(draw, *, depthwise: bool = False) -> Case:
    rank = draw(st.integers(1, 2 if depthwise else 3))
    biggest = 7 if rank < 3 else 4
    spatial = tuple(draw(st.lists(st.integers(1, biggest), min_size=rank, max_size=rank)))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank)))
    groups = 1 if depthwise else draw(st.integers(1, 3))
    c_in = draw(st.integers(1, 3)) * groups
    c_out = draw(st.integers(1, 3)) * (c_in if depthwise else groups)
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    padding = _padding(draw, rank)
    x = _normal(draw, (draw(st.integers(1, 2)), *spatial, c_in))
    w = _normal(draw, (*kernel, 1 if depthwise else c_in // groups, c_out))
    b = _normal(draw, (c_out,)) if draw(st.booleans()) else None
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation}
    if not depthwise:
        kwargs["groups"] = groups
    ref_kwargs = {**kwargs, "groups": c_in if depthwise else groups}
    arrays = (x, w) if b is None else (x, w, b)
    return Case(arrays, kwargs, ref_kwargs)


@st.composite
def conv_transpose_cases(draw) -> Case:
    rank = draw(st.integers(1, 2))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    kernel = tuple(draw(st.lists(st.integers(1, 3), min_size=rank, max_size=rank)))
    groups = draw(st.integers(1, 2))
    a, b_channels = draw(st.integers(1, 2)) * groups, draw(st.integers(1, 2)) * groups
    stride, dilation = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    output_padding = draw(st.integers(0, max(stride, dilation) - 1))
    padding = draw(st.integers(0, 2))
    y = _normal(draw, (draw(st.integers(1, 2)), *spatial, b_channels))
    w = _normal(draw, (*kernel, a // groups, b_channels))
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
              "output_padding": output_padding}  # fmt: skip
    return Case((y, w), kwargs, kwargs)


@st.composite
def pool_cases(draw, *, average: bool) -> Case:
    rank = draw(st.integers(1, 2))
    spatial = tuple(draw(st.lists(st.integers(1, 7), min_size=rank, max_size=rank)))
    window = draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.integers(1, 3)))
    padding = draw(st.one_of(st.sampled_from(["SAME", "VALID"]), st.integers(0, 1)))
    kwargs = {"dilation": draw(st.integers(1, 2)), "ceil_mode": draw(st.booleans())}
    extent = kwargs["dilation"] * (window - 1) + 1
    # Documented refusal, not fuzzed: padding as wide as the window (a window of padding).
    assume(not isinstance(padding, int) or padding < extent)
    if average:
        kwargs["count_include_pad"] = draw(st.booleans())
    x = _normal(draw, (draw(st.integers(1, 2)), *spatial, draw(st.integers(1, 3))))
    args = {"window": window, "stride": stride, "padding": padding, **kwargs}
    return Case((x,), args, args)


@st.composite
def deformable_cases(draw) -> Case:
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    groups, offset_groups = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    c_in = groups * offset_groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = draw(st.one_of(st.just("VALID"), st.integers(0, 2)))
    pads = explicit_pads(padding, (height, width), (kh, kw), stride, dilation)
    out_h = (height + sum(pads[0]) - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    out_w = (width + sum(pads[1]) - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = offset_groups * kh * kw
    out = (1, max(out_h, 0), max(out_w, 0))
    x = _normal(draw, (1, height, width, c_in))
    offsets = 1.5 * _normal(draw, (*out, 2 * taps))
    w = _normal(draw, (kh, kw, c_in // groups, c_out))
    mask = _normal(draw, (*out, taps)) if draw(st.booleans()) else None
    kwargs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
              "offset_groups": offset_groups}  # fmt: skip
    ref_kwargs = {"stride": stride, "pads": pads, "dilation": dilation, "groups": groups,
                  "offset_groups": offset_groups}  # fmt: skip
    return Case((x, offsets, w, mask), kwargs, ref_kwargs)


def _fuzz(strategy: st.SearchStrategy, examples: int) -> Callable:
    """``given(strategy)`` with ``examples`` draws from a fixed seed."""
    return lambda test: settings(
        max_examples=examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )(given(strategy)(test))


@pytest.mark.parametrize("examples", EXAMPLES)
def test_conv(examples):
    _fuzz(conv_cases(), examples)(lambda case: _check(ops.conv, reference.conv, case))()


@pytest.mark.parametrize("examples", EXAMPLES)
def test_depthwise_conv(examples):
    _fuzz(conv_cases(depthwise=True), examples)(
        lambda case: _check(ops.depthwise_conv, reference.conv, case)
    )()


@pytest.mark.parametrize("examples", EXAMPLES)
def test_conv_transpose(examples):
    _fuzz(conv_transpose_cases(), examples)(
        lambda case: _check(ops.conv_transpose, reference.conv_transpose, case)
    )()


@pytest.mark.parametrize("examples", EXAMPLES)
def test_max_pool(examples):
    _fuzz(pool_cases(average=False), examples)(
        lambda case: _check(ops.max_pool, reference.max_pool, case)
    )()


@pytest.mark.parametrize("examples", EXAMPLES)
def test_avg_pool(examples):
    _fuzz(pool_cases(average=True), examples)(
        lambda case: _check(ops.avg_pool, reference.avg_pool, case)
    )()


def _deformable_reference(x, offsets, w, mask, **kwargs) -> np.ndarray:
    return deform_conv_reference(x, offsets, w, None, mask, **kwargs)


def _deformable(x, offsets, w, mask, **kwargs):
    return ops.deformable_conv2d(x, offsets, w, None, mask, **kwargs)


@pytest.mark.parametrize("examples", EXAMPLES)
def test_deformable_conv2d(examples):
    _fuzz(deformable_cases(), examples)(
        lambda case: _check(_deformable, _deformable_reference, case)
    )()
