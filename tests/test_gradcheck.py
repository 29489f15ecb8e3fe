"""The gradient checker itself: it passes on correct gradients and catches wrong ones."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnnjax.gradcheck import (
    assert_grads_close,
    check_grads,
    check_model_grads,
    format_report,
)


def _with_vjp(fun, grad_fn):
    """``fun`` whose reverse-mode gradient is the hand-written ``grad_fn`` (one argument)."""
    wrapped = jax.custom_vjp(fun)
    wrapped.defvjp(lambda x: (fun(x), x), lambda x, ct: (ct * grad_fn(x),))
    return wrapped


def _cubic(x):
    return jnp.sum(x**3 - 2.0 * x)


def _rng_array(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_passes_with_hand_written_gradient():
    # The analytic side is a hand-written derivative, so this checks the numeric side too.
    f = _with_vjp(_cubic, lambda x: 3.0 * x**2 - 2.0)
    report = check_grads(f, (_rng_array((3, 4)),))
    assert report.passed
    (row,) = report.rows
    assert (row.path, row.shape, row.checked, row.size) == ("x", (3, 4), 12, 12)
    assert row.max_rel_err < 1e-7


def test_scaled_gradient_is_caught():
    f = _with_vjp(_cubic, lambda x: 1.1 * (3.0 * x**2 - 2.0))
    report = check_grads(f, (_rng_array((3, 4)),))
    assert not report.passed
    assert report.failed[0].path == "x"
    assert report.rows[0].max_rel_err == pytest.approx(0.1 / 1.1, rel=1e-6)


def test_one_wrong_entry_is_caught_and_located():
    def grad_fn(x):
        return (3.0 * x**2 - 2.0).at[1, 2].multiply(-1.0)

    f = _with_vjp(_cubic, grad_fn)
    x = _rng_array((3, 4)) + 2.0  # keeps 3x^2 - 2 away from 0, so the sign flip matters
    report = check_grads(f, (x,))
    (row,) = report.rows
    assert not row.passed
    assert row.worst_index == (1, 2)
    assert row.max_rel_err == pytest.approx(2.0, rel=1e-6)


def test_only_the_wrong_argument_fails():
    wrong = _with_vjp(lambda v: jnp.sum(jnp.sin(v)), lambda v: jnp.cos(v) + 0.01)

    def f(a, b):
        return jnp.sum(a * a) * wrong(b)

    report = check_grads(f, (_rng_array(5), _rng_array(6, seed=1)))
    assert [(row.path, row.passed) for row in report.rows] == [("a", True), ("b", False)]
    assert [row.path for row in report.failed] == ["b"]


def test_nan_gradient_fails():
    f = _with_vjp(_cubic, lambda x: x * jnp.nan)
    assert not check_grads(f, (_rng_array(3),)).passed


def test_pytree_args_paths_and_skipped_int_leaves():
    def f(params, x, n):
        h = jnp.tanh(x @ params["dense"]["kernel"] + params["dense"]["bias"][None, :])
        return jnp.sum(h**2) * params["scale"] * n

    params = {
        "dense": {"kernel": _rng_array((3, 2)), "bias": _rng_array(2, seed=1)},
        "scale": 0.5,
        "steps": np.array([1, 2], np.int32),
    }
    report = check_grads(f, (params, _rng_array((4, 3), seed=2), 3))
    rows = {row.path: row for row in report.rows}
    assert set(rows) == {
        "params/dense/bias",
        "params/dense/kernel",
        "params/scale",
        "params/steps",
        "x",
        "n",
    }
    assert report.passed
    assert rows["params/steps"].skipped and rows["params/steps"].checked == 0
    assert rows["n"].skipped
    assert not rows["x"].skipped and rows["x"].checked == 12


def test_jitted_function_keeps_argument_names():
    report = check_grads(
        jax.jit(lambda x, y: jnp.sum(x * jnp.sin(y))), (_rng_array(3), _rng_array(3, seed=1))
    )
    assert report.passed
    assert [row.path for row in report.rows] == ["x", "y"]


def test_argnums_selects_arguments():
    def f(a, b):
        return jnp.sum(a * b)

    report = check_grads(f, (_rng_array(3), _rng_array(3, seed=1)), argnums=1)
    assert [row.path for row in report.rows] == ["b"]


def test_check_model_grads_paths_have_no_argument_prefix():
    variables = {"params": {"Conv_0": {"kernel": _rng_array((2, 2)), "bias": _rng_array(2)}}}

    def loss(v, x):
        p = v["params"]["Conv_0"]
        return jnp.sum(jnp.cos(x @ p["kernel"] + p["bias"][None, :]))

    report = check_model_grads(loss, variables, _rng_array((3, 2), seed=3))
    assert report.passed
    assert [row.path for row in report.rows] == ["params/Conv_0/bias", "params/Conv_0/kernel"]


def test_float32_inputs_are_checked_in_float64():
    # In float32 a step of 1e-6 on x ~ 1 is below resolution and the check would be noise.
    x = _rng_array((4, 4)).astype(np.float32)
    report = check_grads(lambda x: jnp.sum(jnp.exp(x)), (x,))
    assert report.passed and report.max_rel_err < 1e-7
    assert report.rows[0].dtype == "float32"
    assert x.dtype == np.float32  # the caller's array is not modified


def test_zero_true_gradient_passes_through_the_floor():
    # d/dx of sum(x * 0) is exactly 0 while f has a large value: only rounding noise remains.
    report = check_grads(
        lambda x, y: jnp.sum(x * 0.0) + 1e6 * jnp.sum(y**2), (_rng_array(3), _rng_array(3))
    )
    assert report.passed


def test_large_leaf_checks_only_a_seeded_sample():
    # The gradient is right at entry 0 only. With a sample of one entry, a check passes
    # exactly when it sampled entry 0, and its worst_index is the entry it sampled.
    f = _with_vjp(lambda x: jnp.sum(x**2), lambda x: (2.0 * x).at[1:].add(1.0))
    x = _rng_array(4)
    sampled = {}
    for seed in range(8):
        (row,) = check_grads(f, (x,), max_entries=1, seed=seed).rows
        assert row.checked == 1 and row.size == 4
        assert row.passed == (row.worst_index == (0,))
        sampled[seed] = row.worst_index
    assert len(set(sampled.values())) > 1  # different seeds sample different entries
    again = check_grads(f, (x,), max_entries=1, seed=3).rows[0]
    assert again.worst_index == sampled[3]


def test_sample_size_and_determinism_on_a_big_leaf():
    x = _rng_array((20, 30))
    f = lambda x: jnp.sum(jnp.sin(x) * x)  # noqa: E731
    a = check_grads(f, (x,), max_entries=16, seed=7)
    b = check_grads(f, (x,), max_entries=16, seed=7)
    assert a.rows[0].checked == 16 and a.rows[0].size == 600
    assert a == b


def test_batched_evaluation_matches_all_at_once():
    x = _rng_array((5, 4))
    f = lambda x: jnp.sum(jnp.tanh(x) ** 3)  # noqa: E731
    full = check_grads(f, (x,), batch_size=0).rows[0]
    chunked = check_grads(f, (x,), batch_size=3).rows[0]
    assert chunked.max_abs_err == pytest.approx(full.max_abs_err, rel=1e-6, abs=1e-15)
    assert chunked.checked == full.checked == 20


def test_format_report_table():
    def f(alpha, beta_long_name):
        return jnp.sum(alpha**2) + jnp.sum(beta_long_name["w"] ** 3)

    report = check_grads(f, (_rng_array((2, 3)), {"w": _rng_array(4), "k": np.int32(3)}))
    text = format_report(report)
    lines = text.splitlines()
    for path in ("alpha", "beta_long_name/w", "beta_long_name/k"):
        assert any(line.startswith(path + " ") for line in lines)
    header = lines[0]
    for line in lines[2:5]:  # the three leaf rows: the shape column starts where its header does
        assert line.index("(") == header.index("shape")
    assert "skipped" in text
    assert lines[-1].startswith("PASS")


def test_assert_grads_close_raises_with_report():
    f = _with_vjp(_cubic, lambda x: 3.0 * x**2)
    with pytest.raises(AssertionError, match=r"(?s)x .*FAIL.*FAIL: 1 leaf above tolerance"):
        assert_grads_close(f, _rng_array(3))
    report = assert_grads_close(lambda a: jnp.sum(a**2), _rng_array(3))
    assert report.passed


@pytest.mark.parametrize(
    ("f", "args", "kwargs", "match"),
    [
        (lambda x: x * 2.0, (np.ones(3),), {}, r"must return a scalar"),
        (lambda x: jnp.sum(x).astype(jnp.float32), (np.ones(3),), {}, r"float64"),
        (lambda x: jnp.sum(x), np.ones(3), {}, r"`args`"),
        (lambda x: jnp.sum(x), (np.ones(3),), {"argnums": 1}, r"`argnums`"),
        (lambda n: n * 1.0, (np.arange(3),), {}, r"no floating-point leaf"),
        (lambda x: jnp.sum(x), (np.ones(3),), {"eps": 0.0}, r"`eps`"),
        (lambda x: jnp.sum(x), (np.ones(3),), {"max_entries": 0}, r"`max_entries`"),
    ],
)
def test_bad_input_raises_value_error(f, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check_grads(f, args, **kwargs)


def test_non_scalar_error_names_the_function():
    def make_vector(x):
        return x

    with pytest.raises(ValueError, match=r"make_vector.*float64\[3\]"):
        check_grads(make_vector, (np.ones(3),))
