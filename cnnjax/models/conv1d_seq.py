"""A 1-D convolutional network over an image read as a sequence: rows or pixels.

Two readings of an image batch ``x: (N, H, W, C)``:

- ``sequence="rows"``: ``H`` time steps of ``W * C`` features (row ``t`` flattened,
  channels fastest): row-sequential MNIST, 28 steps x 28 features;
- ``sequence="pixels"``: ``H * W`` time steps of ``C`` features in raster order (step
  ``i * W + j`` is pixel ``(i, j)``): pixel-sequential MNIST, 784 steps x 1 feature.

With ``causal=True`` the stack is a temporal convolutional network (TCN; Bai, Kolter &
Koltun 2018, after WaveNet): every conv has ``"CAUSAL"`` padding, ``d (k - 1)`` steps on
the left only, so step ``t`` of every layer depends on input steps ``<= t``, and the
classes are read from the last step, which sees the whole sequence once the receptive
field covers it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import Conv, MaxPool
from cnnjax.layers._checks import check_positive_int
from cnnjax.models import register

SEQUENCES = ("rows", "pixels")
# Bai et al.'s TCN initialises every conv of its residual blocks from N(0, 0.01): the
# branches start small, so each block starts near the identity on its (post-ReLU,
# non-negative) input and the signal neither grows nor fades through the depth. With
# LeCun normal, mnist_tcn's ten blocks start with features of std ~6 and a loss of ~15.
RESIDUAL_INIT = nn.initializers.normal(0.01)


def receptive_field(kernel_size: int, dilations: Sequence[int], pools: Sequence[int]) -> int:
    """Time steps that one output step of the conv stack depends on.

    Layer ``l`` is a ``k``-tap conv with dilation ``d_l`` followed by a max-pool of window
    and stride ``p_l`` (1: none). With ``j_l = p_1 ... p_(l-1)`` input steps between
    neighbouring steps at layer ``l``'s input, the conv widens the field by
    ``d_l (k - 1) j_l`` and the pool by ``(p_l - 1) j_l``. Without pools this is
    ``1 + (k - 1) * sum(dilations)``.
    """
    check_positive_int("kernel_size", kernel_size)
    if len(dilations) != len(pools):
        raise ValueError(
            f"`dilations` and `pools` need one entry per conv; got {len(dilations)} and "
            f"{len(pools)}"
        )
    field, jump = 1, 1
    for d, p in zip(dilations, pools, strict=True):
        check_positive_int("dilations", d)
        check_positive_int("pools", p)
        field += d * (kernel_size - 1) * jump + (p - 1) * jump
        jump *= p
    return field


def as_sequence(x: jax.Array, sequence: str) -> jax.Array:
    """``x: (N, H, W, C)`` -> ``(N, H, W * C)`` for ``"rows"``, ``(N, H * W, C)`` for
    ``"pixels"``."""
    if x.ndim != 4:
        raise ValueError(
            f"`x` must be an image batch (N, H, W, C) to read as {sequence!r}; got shape "
            f"{tuple(x.shape)}"
        )
    n, h, w, c = x.shape
    if sequence == "rows":
        return x.reshape(n, h, w * c)
    return x.reshape(n, h * w, c)


@register("conv1d_seq")
class Conv1DSeq(nn.Module):
    """Stacked 1-D convs (ReLU, optional max-pool and residual skips) over a sequence.

    Conv ``i`` has ``features[i]`` filters of ``kernel_size`` taps and dilation
    ``dilations[i]``, then a ReLU, then (if ``pools[i] > 1``) a max-pool of window and
    stride ``pools[i]``. ``"SAME"`` padding, or left-only padding with ``causal``. With
    ``residual`` each conv becomes a residual block ``relu(conv(h) + skip(h))`` (Bai et
    al.'s TCN block with one conv instead of two), ``skip`` the identity or, where the
    width changes, a 1-tap conv. The stack's output ``(N, L', features[-1])`` is sown as
    ``intermediates/features``; the logits are a dense layer on its flattened steps, or
    with ``causal`` on its last step.

    The defaults, row-sequential MNIST (28 steps x 28 features), 64,874 params at 10
    classes; every output step of conv3 sees 32 rows (the whole image):

    ======  ================================  =========  ======
    layer   operation                         output     params
    ======  ================================  =========  ======
    conv1   5-tap conv, 32 filters, ReLU      28 x 32     4,512
    pool1   max-pool 2                        14 x 32
    conv2   5-tap conv, 64 filters, ReLU      14 x 64    10,304
    pool2   max-pool 2                        7 x 64
    conv3   5-tap conv, 128 filters, ReLU     7 x 128    41,088
    logits  dense on the flattened 7 x 128    10          8,970
    ======  ================================  =========  ======

    Attributes:
      num_classes: size of the output layer.
      sequence: ``"rows"`` or ``"pixels"``: how an image becomes a sequence (module doc).
      features: filters of each conv, in order.
      kernel_size: taps of every conv.
      dilations: dilation of each conv (one per entry of ``features``).
      pools: max-pool window after each conv, 1 for none (one per entry of ``features``);
        all 1 with ``causal``, where a pooled step would see the step after it.
      causal: left-only padding and the last step as the classifier's input.
      residual: residual blocks, their kernels drawn from N(0, 0.01) as in Bai et al.'s
        code (plain convs: LeCun normal).
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, H, W, C) -> logits (N, num_classes)``.
    """

    num_classes: int = 10
    sequence: str = "rows"
    features: tuple[int, ...] = (32, 64, 128)
    kernel_size: int = 5
    dilations: tuple[int, ...] = (1, 1, 1)
    pools: tuple[int, ...] = (2, 2, 1)
    causal: bool = False
    residual: bool = False
    dtype: DTypeLike | None = None

    def __post_init__(self) -> None:
        check_positive_int("num_classes", self.num_classes)
        if self.sequence not in SEQUENCES:
            raise ValueError(f"`sequence` must be one of {SEQUENCES}; got {self.sequence!r}")
        if not self.features:
            raise ValueError("`features` must name at least one conv; got ()")
        for f in self.features:
            check_positive_int("features", f)
        for name in ("dilations", "pools"):
            if len(getattr(self, name)) != len(self.features):
                raise ValueError(
                    f"`{name}` needs one entry per conv ({len(self.features)} in `features`); "
                    f"got {getattr(self, name)!r}"
                )
        receptive_field(self.kernel_size, self.dilations, self.pools)  # validates all three
        if self.causal and any(p != 1 for p in self.pools):
            raise ValueError(f"`pools` must all be 1 when `causal`; got {self.pools!r}")
        super().__post_init__()

    @property
    def receptive_field(self) -> int:
        """Input time steps seen by one output step of the conv stack."""
        return receptive_field(self.kernel_size, self.dilations, self.pools)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm; the flag keeps every model's signature alike
        h = as_sequence(x, self.sequence)
        if h.shape[1] < math.prod(self.pools):
            raise ValueError(
                f"`pools` {self.pools} need at least {math.prod(self.pools)} steps; `x` of "
                f"shape {tuple(x.shape)} read as {self.sequence!r} has {h.shape[1]}"
            )
        init = RESIDUAL_INIT if self.residual else nn.initializers.lecun_normal()
        layers = zip(self.features, self.dilations, self.pools, strict=True)
        for i, (features, dilation, pool) in enumerate(layers, start=1):
            conv = Conv(
                features,
                (self.kernel_size,),
                padding="CAUSAL" if self.causal else "SAME",
                dilation=dilation,
                dtype=self.dtype,
                kernel_init=init,
                name=f"conv{i}",
            )
            if not self.residual:
                h = nn.relu(conv(h))
            elif h.shape[-1] == features:
                h = nn.relu(conv(h) + h)
            else:
                # The skip goes first so that model summaries follow conv{i}, the longer path.
                skip = Conv(features, (1,), dtype=self.dtype, kernel_init=init, name=f"skip{i}")(h)
                h = nn.relu(conv(h) + skip)
            if pool > 1:
                h = MaxPool((pool,), name=f"pool{i}")(h)
        self.sow("intermediates", "features", h)
        h = h[:, -1] if self.causal else h.reshape(h.shape[0], -1)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="logits")(h)
