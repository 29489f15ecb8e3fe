"""A convolutional autoencoder: strided-conv encoder, transposed-conv decoder."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
from jax.typing import DTypeLike

from cnnjax.layers import Conv, ConvTranspose
from cnnjax.layers._checks import check_positive_int
from cnnjax.models import register


@register("conv_autoencoder")
class ConvAutoencoder(nn.Module):
    """Images to a small spatial code and back; trained with ``task="reconstruction"``.

    The encoder halves the resolution twice with stride-2 3x3 convs and maps to a
    ``latent``-channel code at a quarter of the resolution; the decoder doubles it twice
    with stride-2 3x3 transposed convs (``SAME``: output exactly twice the input) back to
    the input's channels. The output is linear, in the space of the (normalised) input.
    With the defaults on 28x28x1 (code 7x7x8 = 392 numbers, half of the 784 pixels):

    ========  =========================================  ==========  ======
    layer     operation                                  output      params
    ========  =========================================  ==========  ======
    enc1      3x3 conv, stride 2, 32 filters, ReLU       14x14x32       320
    enc2      3x3 conv, stride 2, 64 filters, ReLU       7x7x64      18,496
    code      3x3 conv, 8 filters (the code)             7x7x8        4,616
    dec1      3x3 transposed conv, stride 2, 64, ReLU    14x14x64     4,672
    dec2      3x3 conv, 32 filters, ReLU                 14x14x32    18,464
    out       3x3 transposed conv, stride 2, C           28x28x1        289
    ========  =========================================  ==========  ======

    Total 46,857 parameters. Spatial sizes must be multiples of 4.

    Attributes:
      widths: filters of the two encoder convs (the decoder mirrors them).
      latent: channels of the code.
      dtype: compute dtype (``None``: from the input); parameters stay float32.

    ``x: (N, H, W, C) -> (N, H, W, C)``.
    """

    widths: tuple[int, int] = (32, 64)
    latent: int = 8
    dtype: DTypeLike | None = None

    def __post_init__(self) -> None:
        if len(self.widths) != 2:
            raise ValueError(f"`widths` must name the two encoder convs; got {self.widths!r}")
        for w in self.widths:
            check_positive_int("widths", w)
        check_positive_int("latent", self.latent)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no dropout or batch norm; the flag keeps every model's signature alike
        if x.ndim != 4 or x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(
                f"x must be (N, H, W, C) with H and W multiples of 4 (two stride-2 stages); "
                f"got {x.shape}"
            )
        w1, w2 = self.widths
        conv = functools.partial(Conv, kernel_size=3, padding="SAME", dtype=self.dtype)
        up = functools.partial(
            ConvTranspose, kernel_size=3, stride=2, padding="SAME", dtype=self.dtype
        )
        h = nn.relu(conv(w1, stride=2, name="enc1")(x))
        h = nn.relu(conv(w2, stride=2, name="enc2")(h))
        code = conv(self.latent, name="code")(h)
        h = nn.relu(up(w2, name="dec1")(code))
        h = nn.relu(conv(w1, name="dec2")(h))
        return up(x.shape[-1], name="out")(h)
