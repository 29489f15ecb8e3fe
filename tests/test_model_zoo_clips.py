"""Moving-digit clips and the 3-D conv net on them.

The clip generator is checked against plain loops that move a point frame by frame and
reflect it at the frame's edges (the Moving MNIST rule), and for the property the task
rests on: every frame holds the whole digit, once. The model: parameter counts and
shapes by hand, its first layer against a NumPy 3-D correlation, a float64 gradient
check, and two training steps of the experiment.

A 3-D conv with a ``kt x kh x kw`` kernel from ``c_in`` to ``c_out`` channels has
``kt * kh * kw * c_in * c_out`` weights plus ``c_out`` biases.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zoo_helpers import KEY, conv, count, dense, trace

from cnnjax import models
from cnnjax.analysis.gradcheck_model import check_model, format_by_layer
from cnnjax.training.clips import bounce_positions, moving_clips, render_clips


def _digits(n: int, h: int = 28, w: int = 28, c: int = 1, seed: int = 0) -> np.ndarray:
    """Images with no black pixel, so the digit's place in a frame is unambiguous."""
    return np.random.default_rng(seed).uniform(0.25, 1.0, (n, h, w, c)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# The generator against plain loops
# ---------------------------------------------------------------------------------------


def reference_positions(start, velocity, num_frames, travel):
    """Frame-by-frame motion: record the nearest pixel, step by the velocity, and while
    outside ``[0, travel]`` mirror the position in the edge it crossed and reverse that
    axis's velocity. A digit as large as the frame (travel 0) cannot move."""
    pos = [float(p) for p in start]
    vel = [float(v) for v in velocity]
    out = []
    for _ in range(num_frames):
        out.append([round(p) for p in pos])  # Python rounds ties to even, as documented
        for a in range(2):
            if travel[a] == 0:
                continue
            pos[a] += vel[a]
            while not 0 <= pos[a] <= travel[a]:
                pos[a] = -pos[a] if pos[a] < 0 else 2 * travel[a] - pos[a]
                vel[a] = -vel[a]
    return out


def reference_clip(digit, positions, frame_size):
    h, w, c = digit.shape
    clip = np.zeros((len(positions), frame_size, frame_size, c), digit.dtype)
    for t, (row, col) in enumerate(positions):
        for i in range(h):
            for j in range(w):
                clip[t, row + i, col + j] = digit[i, j]
    return clip


# Starts and velocities are multiples of 1/4, exact in float32, so positions exactly on
# a half pixel (ties) are hit and rounded alike on both sides.
TRAJECTORIES = [
    # (digit h, w, C), frame, frames, starts, velocities
    ((28, 28, 1), 32, 8, [[0, 4], [2, 1], [3.5, 0]], [[1, -1], [1.75, -0.5], [-2.25, 0]]),
    # several bounces within one step (speed > 2 * travel), and a fractional start
    ((28, 28, 1), 32, 6, [[1, 0.25], [4, 2]], [[9.5, -12.25], [-8, 4]]),
    # non-square, several channels, wider travel per axis
    ((20, 24, 2), 32, 10, [[12, 8], [0, 0]], [[2.5, -3.25], [0.75, 1.5]]),
    # the digit fills the frame: it cannot move
    ((28, 28, 1), 28, 3, [[0, 0]], [[1.5, -2]]),
]


@pytest.mark.parametrize(("shape", "frame_size", "num_frames", "starts", "velocities"),
                         TRAJECTORIES)  # fmt: skip
def test_clips_match_frame_by_frame_loops(shape, frame_size, num_frames, starts, velocities):
    digits = _digits(len(starts), *shape)
    travel = (frame_size - shape[0], frame_size - shape[1])
    positions = bounce_positions(
        jnp.asarray(starts, jnp.float32),
        jnp.asarray(velocities, jnp.float32),
        num_frames=num_frames,
        travel=travel,
    )
    clips = render_clips(jnp.asarray(digits), positions, frame_size=frame_size)
    assert clips.shape == (len(starts), num_frames, frame_size, frame_size, shape[2])
    for digit, clip, start, velocity in zip(digits, clips, starts, velocities, strict=True):
        expected = reference_positions(start, velocity, num_frames, travel)
        np.testing.assert_array_equal(reference_clip(digit, expected, frame_size), clip)


def _place_of(digit: np.ndarray, frame: np.ndarray) -> list[tuple[int, int]]:
    """Every top-left corner at which ``frame`` is ``digit`` on black."""
    h, w, _ = digit.shape
    places = []
    for row in range(frame.shape[0] - h + 1):
        for col in range(frame.shape[1] - w + 1):
            rest = frame.copy()
            rest[row : row + h, col : col + w] = 0
            if np.array_equal(frame[row : row + h, col : col + w], digit) and not rest.any():
                places.append((row, col))
    return places


def test_every_frame_holds_the_whole_digit_once_and_moves_at_most_max_speed():
    digits = _digits(6)
    max_speed = 1.5
    clips = np.asarray(
        moving_clips(KEY, jnp.asarray(digits), num_frames=5, frame_size=34, max_speed=max_speed)
    )
    np.testing.assert_allclose(
        clips.sum(axis=(2, 3, 4)), np.repeat(digits.sum(axis=(1, 2, 3))[:, None], 5, 1), rtol=1e-5
    )
    moved = False
    for digit, clip in zip(digits, clips, strict=True):
        places = [_place_of(digit, frame) for frame in clip]
        assert all(len(p) == 1 for p in places), places
        path = np.array([p[0] for p in places])
        # rounding may add up to one pixel to the distance travelled in one frame
        assert np.abs(np.diff(path, axis=0)).max() <= math.floor(max_speed) + 1
        moved |= bool(np.any(path != path[0]))
    assert moved


def test_same_key_same_clips_other_key_other_clips():
    x = jnp.asarray(_digits(4))
    make = jax.jit(functools.partial(moving_clips, num_frames=4, frame_size=32, max_speed=2.0))
    a, b = make(KEY, x), make(KEY, x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, make(jax.random.key(1, impl="rbg"), x))


def test_clips_vmap_over_keys_and_keep_the_dtype():
    x = jnp.asarray(_digits(2)).astype(jnp.bfloat16)
    # threefry: rbg bits under vmap need not equal those of each key alone
    keys = jax.random.split(jax.random.key(0, impl="threefry2x32"), 3)
    make = functools.partial(moving_clips, num_frames=3, frame_size=30, max_speed=1.0)
    clips = jax.vmap(lambda k: make(k, x))(keys)
    assert clips.shape == (3, 2, 3, 30, 30, 1) and clips.dtype == jnp.bfloat16
    np.testing.assert_array_equal(clips[1], jax.jit(make)(keys[1], x))


def test_zero_speed_gives_a_still_clip():
    clips = moving_clips(KEY, jnp.asarray(_digits(3)), num_frames=4, frame_size=32, max_speed=0)
    np.testing.assert_array_equal(clips, jnp.repeat(clips[:, :1], 4, axis=1))


@pytest.mark.parametrize(
    ("shape", "kwargs", "match"),
    [
        ((2, 28, 28), {}, "`x` must be a float batch"),
        ((2, 29, 28, 1), {"frame_size": 28}, "`frame_size`=28 must be at least"),
        ((2, 28, 28, 1), {"num_frames": 0}, "`num_frames` must be a positive int"),
        ((2, 28, 28, 1), {"frame_size": 32.0}, "`frame_size` must be a positive int"),
        ((2, 28, 28, 1), {"max_speed": -1.0}, "`max_speed` must be a non-negative"),
    ],
)
def test_bad_clip_arguments_raise(shape, kwargs, match):
    args = {"num_frames": 4, "frame_size": 32, "max_speed": 1.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        moving_clips(KEY, jnp.zeros(shape), **args)


def test_integer_images_are_rejected():
    with pytest.raises(ValueError, match="dtype uint8"):
        moving_clips(KEY, jnp.zeros((1, 28, 28, 1), jnp.uint8), num_frames=2, frame_size=28,
                     max_speed=1.0)  # fmt: skip


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


def test_parameter_counts_and_shapes_by_hand():
    params, logits, layers = trace(models.get("conv3d_clips"), (2, 8, 32, 32, 1))
    per_layer = {
        "conv1": conv((3, 3, 3), 1, 8),  # 224
        "conv2": conv((3, 3, 3), 8, 16),  # 3,472
        "conv3": conv((3, 3, 3), 16, 32),  # 13,856
        "logits": dense(2 * 4 * 4 * 32, 10),  # 10,250
    }
    assert {name: count(p) for name, p in params.items()} == per_layer
    assert count(params) == 27_802
    assert logits.shape == (2, 10)
    # SAME everywhere: conv1 strides 2 in T, H, W; pool1 halves all three; pool2 H and W.
    assert layers == {
        "conv1": (4, 16, 16, 8),
        "pool1": (2, 8, 8, 8),
        "conv2": (2, 8, 8, 16),
        "pool2": (2, 4, 4, 16),
        "conv3": (2, 4, 4, 32),
        "logits": (10,),
    }


def test_odd_clip_sizes_round_up_and_channelscount():
    params, logits, layers = trace(
        models.get("conv3d_clips", num_classes=7, features=(2, 3, 4)), (1, 5, 30, 30, 3)
    )
    assert count(params) == (conv((3, 3, 3), 3, 2) + conv((3, 3, 3), 2, 3)
                              + conv((3, 3, 3), 3, 4) + dense(2 * 4 * 4 * 4, 7))  # fmt: skip
    assert logits.shape == (1, 7)
    # T: 5 -> 3 -> 2 -> 2 -> 2; H, W: 30 -> 15 -> 8 -> 8 -> 4 -> 4
    assert layers["conv1"] == (3, 15, 15, 2) and layers["pool1"] == (2, 8, 8, 2)
    assert layers["conv3"] == (2, 4, 4, 4)


def reference_conv1(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """3x3x3 correlation with stride 2 and SAME padding (TensorFlow's: output ceil(n / 2),
    any odd padding at the high end), as loops over output voxels and taps."""
    n, *spatial, _ = x.shape
    out = [-(-s // 2) for s in spatial]
    low = [max((o - 1) * 2 + 3 - s, 0) // 2 for o, s in zip(out, spatial, strict=True)]
    y = np.zeros((n, *out, kernel.shape[-1]))
    for b in range(n):
        for t in range(out[0]):
            for i in range(out[1]):
                for j in range(out[2]):
                    acc = bias.astype(np.float64).copy()
                    for dt in range(3):
                        for di in range(3):
                            for dj in range(3):
                                src = (2 * t + dt - low[0], 2 * i + di - low[1],
                                       2 * j + dj - low[2])  # fmt: skip
                                if all(0 <= s < m for s, m in zip(src, spatial, strict=True)):
                                    acc += x[b, src[0], src[1], src[2]] @ kernel[dt, di, dj]
                    y[b, t, i, j] = acc
    return y


def test_conv1_convolves_time_and_space_together():
    """The first layer is a true 3-D correlation: each output mixes 3 frames."""
    x = np.random.default_rng(1).normal(size=(2, 5, 6, 7, 1)).astype(np.float32)
    model = models.get("conv3d_clips", features=(3, 2, 2))
    variables = jax.jit(model.init)(KEY, x)
    apply = functools.partial(model.apply, capture_intermediates=True, mutable=["intermediates"])
    _, state = jax.jit(apply)(variables, x)
    conv1 = state["intermediates"]["conv1"]["__call__"][0]
    p = variables["params"]["conv1"]
    expected = reference_conv1(x, np.asarray(p["kernel"]), np.asarray(p["bias"]))
    np.testing.assert_allclose(conv1, expected, rtol=1e-5, atol=1e-5)


def test_model_gradcheck_in_float64():
    x = np.random.default_rng(2).normal(size=(2, 4, 8, 8, 1))
    report = check_model(models.get("conv3d_clips", features=(2, 3, 4)), x, max_entries=8)
    assert report.passed, format_by_layer(report)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"features": (8, 16)}, "`features` must give the filters of 3 convs"),
     ({"features": (8, 0, 4)}, "`features` must be a positive int"),
     ({"num_classes": 0}, "`num_classes` must be a positive int")],
)  # fmt: skip
def test_bad_model_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        models.get("conv3d_clips", **kwargs)


def test_images_instead_of_clips_raise():
    model = models.get("conv3d_clips")
    with pytest.raises(ValueError, match=r"batch of clips \(N, T, H, W, C\); got shape"):
        jax.eval_shape(model.init, KEY, jax.ShapeDtypeStruct((2, 28, 28, 1), jnp.float32))
