"""The deformable-conv network and its plain twin, and the rotation/scale distortion of
MNIST they are compared on.

The distortion is checked against a NumPy loop written from the definition (rotate the
picture counter-clockwise as displayed, scale it about the centre, bilinear, black
outside); parameter counts by hand; the deformable twin against the plain one at
initialisation; and both experiments for two training steps on generated data.
"""

from __future__ import annotations

import math
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from zoo_helpers import KEY, conv, count, dense, trace

from cnnjax import models
from cnnjax.training import load_experiment
from cnnjax.training.augment import AUGMENTATIONS, random_affine, rotate_and_scale

# rbg compiles several times faster than threefry on CPU; the values do not matter here.
EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


# ---------------------------------------------------------------------------------------
# random_affine: rotation and scale about the centre
# ---------------------------------------------------------------------------------------


def _bilinear(image: np.ndarray, row: float, col: float) -> np.ndarray:
    """``image (H, W, C)`` at a real position; each of the four neighbours outside the
    image counts as 0."""
    h, w, c = image.shape
    r0, c0 = math.floor(row), math.floor(col)
    value = np.zeros(c)
    for r, wr in ((r0, 1 - (row - r0)), (r0 + 1, row - r0)):
        for q, wq in ((c0, 1 - (col - c0)), (c0 + 1, col - c0)):
            if 0 <= r < h and 0 <= q < w:
                value += wr * wq * image[r, q]
    return value


def _rotate_scale_reference(image: np.ndarray, degrees: float, scale: float) -> np.ndarray:
    """Rotate ``image (H, W, C)`` counter-clockwise by ``degrees`` as displayed, scale by
    ``scale``, both about the centre, in float64 loops.

    Display coordinates put x to the right and y up, origin at the centre. The output
    pixel at display point p shows the input at the point that the rotation and scaling
    move onto p: ``R(-t) p / s``.
    """
    h, w, _ = image.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    t = math.radians(degrees)
    out = np.zeros(image.shape)
    for i in range(h):
        for j in range(w):
            x, y = j - cx, cy - i
            src_x = (math.cos(t) * x + math.sin(t) * y) / scale
            src_y = (-math.sin(t) * x + math.cos(t) * y) / scale
            out[i, j] = _bilinear(image.astype(np.float64), cy - src_y, cx + src_x)
    return out


def _images(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(size=shape).astype(np.float32)


@pytest.mark.parametrize("size", [(7, 7), (6, 9)], ids=["square-odd", "oblong-even"])
def test_rotate_and_scale_matches_a_numpy_loop(size):
    degrees = np.array([30.0, -45.0, 17.0, 0.0, 120.0], np.float32)
    scales = np.array([1.0, 0.7, 1.2, 0.5, 1.0], np.float32)
    x = _images((5, *size, 2))
    got = jax.jit(rotate_and_scale)(jnp.asarray(x), jnp.asarray(degrees), jnp.asarray(scales))
    expected = [_rotate_scale_reference(x[n], degrees[n], scales[n]) for n in range(5)]
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-5, atol=1e-5)


def test_angle_zero_scale_one_is_the_identity():
    x = _images((3, 6, 5, 2))
    ones = jnp.ones(3)
    np.testing.assert_array_equal(rotate_and_scale(jnp.asarray(x), jnp.zeros(3), ones), x)
    same = random_affine(KEY, jnp.asarray(x), max_degrees=0.0, min_scale=1.0, max_scale=1.0)
    np.testing.assert_array_equal(same, x)


def test_positive_angles_turn_counter_clockwise_like_rot90():
    x = _images((3, 8, 8, 2))
    got = rotate_and_scale(jnp.asarray(x), jnp.array([90.0, -90.0, 180.0]), jnp.ones(3))
    for n, k in enumerate((1, -1, 2)):  # np.rot90 turns counter-clockwise, k quarter turns
        np.testing.assert_allclose(got[n], np.rot90(x[n], k), atol=1e-6)
    # By hand: the top-right pixel goes to the top-left corner.
    corner = np.zeros((1, 3, 3, 1), np.float32)
    corner[0, 0, 2, 0] = 1.0
    turned = np.asarray(rotate_and_scale(jnp.asarray(corner), jnp.array([90.0]), jnp.ones(1)))
    assert np.argwhere(turned[0, :, :, 0] > 0.5).tolist() == [[0, 0]]


def _principal_axis(image: np.ndarray) -> tuple[float, float]:
    """(angle in degrees of the long axis in display coordinates, its variance) of an
    intensity blob ``(H, W)``, from its second moments."""
    h, w = image.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x, y = x - (w - 1) / 2, (h - 1) / 2 - y  # display: x right, y up, centred
    mass = image.sum()
    cov = np.array([[(image * x * x).sum(), (image * x * y).sum()],
                    [(image * x * y).sum(), (image * y * y).sum()]]) / mass  # fmt: skip
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    vx, vy = eigenvectors[:, 1]
    angle = math.degrees(math.atan2(vy, vx))
    return (angle + 90) % 180 - 90, eigenvalues[1]  # an axis: modulo 180 degrees


def test_random_affine_draws_an_independent_angle_and_scale_per_image():
    """A centred blob four times longer than wide, lying along x: the long axis of each
    output is at the drawn angle and its length follows the drawn scale."""
    size, n = 41, 64
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    blob = np.exp(-(x**2) / (2 * 4.0**2) - y**2 / (2 * 1.0**2)).astype(np.float32)
    batch = jnp.asarray(np.broadcast_to(blob[None, :, :, None], (n, size, size, 1)))
    distort = jax.jit(random_affine, static_argnames=("max_degrees", "min_scale", "max_scale"))
    out = np.asarray(distort(KEY, batch, max_degrees=45.0, min_scale=0.7, max_scale=1.2))
    _, variance = _principal_axis(blob)
    axes = np.array([_principal_axis(image[..., 0]) for image in out])  # (n, 2)
    angles, scales = axes[:, 0], np.sqrt(axes[:, 1] / variance)
    assert -45.5 < min(angles) < -30 and 30 < max(angles) < 45.5
    assert 0.69 < min(scales) < 0.8 and 1.1 < max(scales) < 1.21
    # Angle and scale are drawn independently: they are not (anti)correlated.
    assert abs(np.corrcoef(angles, scales)[0, 1]) < 0.4


def test_random_affine_is_registered_and_validates_its_arguments():
    assert AUGMENTATIONS["random_affine"] is random_affine
    x = jnp.zeros((2, 4, 4, 1))
    with pytest.raises(ValueError, match="min_scale"):
        random_affine(KEY, x, max_degrees=10.0, min_scale=1.2, max_scale=0.8)
    with pytest.raises(ValueError, match="max_degrees"):
        random_affine(KEY, x, max_degrees=-1.0, min_scale=1.0, max_scale=1.0)
    with pytest.raises(ValueError, match=r"`degrees` and `scales`.*\(3,\)"):
        rotate_and_scale(x, jnp.zeros(3), jnp.ones(3))


# ---------------------------------------------------------------------------------------
# deformable_cnn and its plain twin
# ---------------------------------------------------------------------------------------


def deformable_cnn_counts(deformable: bool, offset_groups: int = 1) -> dict[str, int]:
    def offset_conv(c_in: int) -> int:
        # 3x3 from the layer's input to (dy, dx, mask logit) per offset group and tap.
        return conv(3, c_in, offset_groups * 9 * 3) if deformable else 0

    return {
        "conv1": conv(3, 1, 16),
        "conv2": conv(3, 16, 32),
        "conv3": conv(3, 32, 16) + offset_conv(32),
        "conv4": conv(3, 16, 16) + offset_conv(16),
        "logits": dense(16, 10),
    }


@pytest.mark.parametrize(
    ("kwargs", "per_layer", "total"),
    [
        ({}, deformable_cnn_counts(True), 23_632),
        ({"deformable": False}, deformable_cnn_counts(False), 11_914),
        ({"offset_groups": 2}, deformable_cnn_counts(True, offset_groups=2), None),
    ],
    ids=["deformable", "plain", "offset_groups=2"],
)
def test_parameter_counts_and_shapes_by_hand(kwargs, per_layer, total):
    params, logits, shapes = trace(models.get("deformable_cnn", **kwargs), (2, 28, 28, 1))
    assert logits.shape == (2, 10)
    assert {layer: count(p) for layer, p in params.items()} == per_layer
    if total is not None:  # the totals quoted in the docstrings
        assert sum(per_layer.values()) == total
    assert shapes == {
        "conv1": (14, 14, 16),  # conv and 2x2 max-pool, one ConvMaxPool
        "conv2": (7, 7, 32),
        "conv3": (7, 7, 16),
        "conv4": (7, 7, 16),
        "gap": (16,),
        "logits": (10,),
    }


def test_deformable_twin_adds_exactly_the_offset_convs():
    deformable, _, _ = trace(models.get("deformable_cnn"), (2, 28, 28, 1))
    plain, _, _ = trace(models.get("deformable_cnn", deformable=False), (2, 28, 28, 1))
    assert count(deformable) - count(plain) == (9 * 32 * 27 + 27) + (9 * 16 * 27 + 27) == 11_718
    offset = {k: v.shape for k, v in deformable["conv3"]["offset_conv"].items()}
    assert offset == {"kernel": (3, 3, 32, 27), "bias": (27,)}
    main = {k: v.shape for k, v in deformable["conv3"].items() if k != "offset_conv"}
    assert main == {k: v.shape for k, v in plain["conv3"].items()}


def _small(deformable: bool) -> nn.Module:
    return models.get("deformable_cnn", features=(4, 6), deformable_features=(5, 3),
                      deformable=deformable)  # fmt: skip


def test_deformable_twin_starts_as_the_plain_twin():
    """DeformableConv's offset conv starts at zero (offsets 0, mask 1): with the plain
    twin's parameters for everything else, the two networks compute the same logits; once
    the offsets move, they do not."""
    x = jnp.asarray(_images((3, 12, 12, 1), seed=1))
    deformable, plain = _small(True), _small(False)
    variables = jax.jit(deformable.init)(KEY, x)
    offset_convs = {k: variables["params"][k].pop("offset_conv") for k in ("conv3", "conv4")}
    plain_logits = jax.jit(plain.apply)(variables, x)  # the main conv params only

    @jax.jit
    def deformable_logits(offset_convs):
        params = {k: dict(v) for k, v in variables["params"].items()}
        for k, offset_conv in offset_convs.items():
            params[k]["offset_conv"] = offset_conv
        return deformable.apply({"params": params}, x)

    np.testing.assert_allclose(deformable_logits(offset_convs), plain_logits, atol=1e-6)
    assert all(np.all(np.asarray(p) == 0) for p in jax.tree.leaves(offset_convs))
    moved = jax.tree.map(lambda p: p + 0.3, offset_convs)
    assert not np.allclose(deformable_logits(moved), plain_logits, atol=1e-3)


def test_deformable_cnn_validates_its_arguments():
    with pytest.raises(ValueError, match="deformable_features"):
        models.get("deformable_cnn", deformable_features=())
    with pytest.raises(ValueError, match="features"):
        models.get("deformable_cnn", features=(32, 0))
    with pytest.raises(ValueError, match="offset_groups"):
        models.get("deformable_cnn", offset_groups=0)


# ---------------------------------------------------------------------------------------
# The two experiments
# ---------------------------------------------------------------------------------------


def test_plain_experiment_differs_from_the_deformable_one_in_one_field():
    deformable = load_experiment("mnist_deformable", EXPERIMENTS).to_dict()
    plain = load_experiment("mnist_deformable_plain", EXPERIMENTS).to_dict()
    assert deformable["model"]["kwargs"].pop("deformable") is True
    assert plain["model"]["kwargs"].pop("deformable") is False
    assert (deformable.pop("experiment"), plain.pop("experiment")) == (
        "mnist_deformable", "mnist_deformable_plain"
    )  # fmt: skip
    assert deformable == plain
    assert plain["augment"]["name"] == "random_affine" and plain["augment"]["distort_test"]
