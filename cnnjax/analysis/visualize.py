"""The pictures the tutorials draw: first-layer filters and feature maps, as PNG grids.

:func:`write_pictures` runs the model on one image and writes into a directory:

- ``input.png``: the image as the model sees it (after preprocessing);
- ``filters.png``: the filters of the first convolution the model calls, one tile each;
- ``feature_maps_<stage>.png`` for every conv stage, one tile per channel. A stage is a
  direct child of the model that is or contains a convolution (a ``cnnjax.layers``
  convolution, or any module with a ``kernel_size`` field) and outputs a feature map
  (``conv1``, ``inception3a``, ...); the picture is its output, i.e. before any activation
  the model applies after it.

Every tile is scaled independently to its own min..max (gray for images and filters,
viridis for feature maps) and enlarged by an integer factor to about
:data:`TILE_PIXELS` pixels; tiles are laid out in a near-square grid with :data:`GAP`
white pixels around and between them, so a picture's size in pixels follows from the
number and shape of its tiles. Layouts beyond 2-D images:

- filters ``(*k, C_in)`` per output channel: RGB when the kernel is 2-D with 3 input
  channels; otherwise gray, the input channels side by side (2-D), as rows (1-D), or
  as rows of frames (3-D: ``C_in kh x kt kw``);
- feature maps: 1-D ``(L, C)`` as a single ``C x L`` tile (one row per channel, each row
  scaled on its own); 3-D ``(T, H, W, C)`` by their middle frame ``T // 2``; at most
  :data:`MAX_TILES` channels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import flax.linen as nn
import jax
import matplotlib
import matplotlib.image
import numpy as np

from cnnjax.analysis._trace import Call, subtree, trace_calls
from cnnjax.layers import SeparableConv, SpatiallySeparableConv

__all__ = ["GAP", "MAX_TILES", "TILE_PIXELS", "write_pictures"]

TILE_PIXELS = 96  # tiles are enlarged by an integer factor to about this many pixels
GAP = 2  # white pixels around and between tiles
MAX_TILES = 64  # channels drawn per feature-map picture


def write_pictures(
    model: nn.Module, variables: Mapping, image: jax.Array, directory: str | Path
) -> list[Path]:
    """Writes ``input.png``, ``filters.png`` and ``feature_maps_<stage>.png`` into
    ``directory`` (created if missing); returns their paths in that order.

    Args:
      model: a Flax module called as ``model.apply(variables, x, train=False)``.
      variables: its variables (``{"params": ...}``, plus ``batch_stats`` if any).
      image: ``(1, *spatial, C)``, one preprocessed example.

    Raises:
      ValueError: ``image`` is not one example, or the model calls no convolution.
    """
    if image.ndim < 3 or image.shape[0] != 1:
        raise ValueError(f"`image` must be one example (1, *spatial, C); got shape {image.shape}")
    calls: list[Call] = []

    def forward(variables: Mapping, image: jax.Array) -> list[list[jax.Array]]:
        _, recorded = trace_calls(lambda: model.apply(variables, image, train=False))
        calls.extend(recorded)
        return [jax.tree.leaves(call.output) for call in recorded]

    outputs = jax.jit(forward)(variables, image)  # eager would compile op by op
    convs = [call for call in calls if call.is_conv]
    if not convs:
        raise ValueError(f"{type(model).__name__} calls no convolution layer: no filters to draw")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pictures = {
        "input.png": _grid(_map_tiles(np.asarray(image[0]), cmap="gray")),
        "filters.png": _grid(_filter_tiles(_filters(convs[0], variables["params"]))),
    }
    for name, i in _stages(calls):
        fmap = np.asarray(outputs[i][0][0])  # the call's first array, the one example
        pictures[f"feature_maps_{name}.png"] = _grid(_map_tiles(fmap, cmap="viridis"))
    paths = []
    for filename, picture in pictures.items():
        matplotlib.image.imsave(directory / filename, picture)
        paths.append(directory / filename)
    return paths


# ----------------------------------------------------------------------------- what to draw


def _filters(call: Call, params: Mapping) -> np.ndarray:
    """The layer's filters as one kernel ``(*k, C_in, C_out)`` (depthwise ones for a
    separable conv, the rank-factored product for a spatially separable one)."""
    p = subtree(params, call.path)
    if isinstance(call.module, SpatiallySeparableConv):
        col, row = np.asarray(p["col_kernel"]), np.asarray(p["row_kernel"])
        return np.einsum("icm,jmo->ijco", col[:, 0], row[0])
    if isinstance(call.module, SeparableConv):
        return np.asarray(p["depthwise_kernel"])
    return np.asarray(p["kernel"])


def _stages(calls: list[Call]) -> list[tuple[str, int]]:
    """``(name, index)`` of the model's direct children that convolve and output a map."""

    def convolves(i: int) -> bool:  # also a model's own conv layer, by its kernel_size
        call = calls[i]
        return (
            call.is_conv
            or hasattr(call.module, "kernel_size")
            or any(convolves(c) for c in call.children)
        )

    stages, seen = [], set()
    for i in calls[0].children:
        call = calls[i]
        leaves = jax.tree.leaves(call.output)
        if convolves(i) and leaves and leaves[0].ndim >= 3:
            name = call.name if call.name not in seen else f"{call.name}_{i}"  # a reused module
            seen.add(name)
            stages.append((name, i))
    return stages


# ----------------------------------------------------------------------------- tiles


def _filter_tiles(kernel: np.ndarray) -> list[np.ndarray]:
    """One RGB tile per output channel of ``kernel (*k, C_in, C_out)``."""
    return [_filter_tile(kernel[..., o]) for o in range(kernel.shape[-1])]


def _filter_tile(f: np.ndarray) -> np.ndarray:
    """``f (*k, C_in)`` as an RGB tile (module docstring)."""
    if f.ndim == 3 and f.shape[-1] == 3:
        return _unit(f)
    if f.ndim == 2:  # (k, C_in): one row per input channel
        flat = f.T
    elif f.ndim == 3:  # (kh, kw, C_in): channels side by side
        kh, kw, c = f.shape
        flat = np.moveaxis(f, -1, 1).reshape(kh, c * kw)
    else:  # (kt, kh, kw, C_in): per channel a row of the kt frames
        kt, kh, kw, c = f.shape
        flat = f.transpose(3, 1, 0, 2).reshape(c * kh, kt * kw)
    return _colour(_unit(flat), "gray")


def _map_tiles(a: np.ndarray, cmap: str) -> list[np.ndarray]:
    """One example's map ``a (*spatial, C)`` as RGB tiles (module docstring)."""
    if a.ndim == 2:  # (L, C): one tile, a row per channel
        rows = a.T[:MAX_TILES]
        return [_colour(np.stack([_unit(r) for r in rows]), cmap)]
    if a.ndim == 4:  # (T, H, W, C): the middle frame
        a = a[a.shape[0] // 2]
    if cmap == "gray" and a.shape[-1] == 3:  # a colour image
        return [_unit(a)]
    return [_colour(_unit(a[..., c]), cmap) for c in range(min(a.shape[-1], MAX_TILES))]


def _unit(a: np.ndarray) -> np.ndarray:
    """``a`` scaled to [0, 1] (0.5 where it is constant)."""
    lo, hi = float(np.min(a)), float(np.max(a))
    if hi == lo:
        return np.full(a.shape, 0.5)
    return (a - lo) / (hi - lo)


def _colour(u: np.ndarray, cmap: str) -> np.ndarray:
    """``u (h, w)`` in [0, 1] through a colormap: ``(h, w, 3)``."""
    return matplotlib.colormaps[cmap](u)[..., :3]


def _grid(tiles: list[np.ndarray]) -> np.ndarray:
    """Equal-shaped RGB tiles ``(h, w, 3)`` enlarged and laid out on white: ``cols =
    ceil(sqrt(n))``, ``rows = ceil(n / cols)``, ``GAP`` pixels around and between."""
    h, w = tiles[0].shape[:2]
    factor = max(1, TILE_PIXELS // max(h, w))
    th, tw = h * factor, w * factor
    cols = math.ceil(math.sqrt(len(tiles)))
    rows = math.ceil(len(tiles) / cols)
    canvas = np.ones((rows * (th + GAP) + GAP, cols * (tw + GAP) + GAP, 3))
    for i, tile in enumerate(tiles):
        top, left = GAP + (i // cols) * (th + GAP), GAP + (i % cols) * (tw + GAP)
        canvas[top : top + th, left : left + tw] = np.kron(tile, np.ones((factor, factor, 1)))
    return canvas
