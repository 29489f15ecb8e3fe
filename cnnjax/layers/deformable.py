"""Deformable convolution layer (v1 and v2) that predicts its own sampling offsets."""

from __future__ import annotations

import flax.linen as nn
import jax
from flax.linen.dtypes import promote_dtype

from cnnjax import ops
from cnnjax.layers._checks import (
    KernelSize,
    check_divides,
    check_kernel_size,
    check_positive_int,
    resolve_kernel_size,
)
from cnnjax.layers.conv import Conv, ConvLayer
from cnnjax.ops._args import IntOrSeq, PaddingLike


class DeformableConv(ConvLayer):
    """2-D deformable convolution, :func:`cnnjax.ops.deformable_conv2d`.

    A :class:`Conv` named ``offset_conv`` with the same kernel size, stride, padding and
    dilation reads ``x`` and predicts, at every output position, ``(dy, dx)`` for each
    kernel tap and offset group and, with ``use_mask`` (v2), one modulation logit per tap;
    the mask is ``2 * sigmoid(logit)``. ``offset_conv`` starts with zero weights and bias, so
    at initialisation the offsets are 0 and the mask is 1: the layer starts out exactly as a
    plain ``Conv`` with the same ``kernel`` and ``bias``, and learns to deform from there.

    Attributes:
      features: output channels.
      kernel_size: int or ``(kh, kw)``.
      stride, padding, dilation, groups, offset_groups, padding_mode: as for the op
        (``offset_groups`` must be given here: it sizes ``offset_conv``).
      use_mask: predict a modulation mask (deformable conv v2); ``False`` gives v1.

    Params: ``kernel`` ``(kh, kw, C_in // groups, features)``, ``bias`` ``(features,)``,
    ``offset_conv/kernel`` ``(kh, kw, C_in, offset_groups * kh * kw * (3 if use_mask else
    2))``, ``offset_conv/bias``. Output channels of ``offset_conv``: first the offsets in the
    op's layout, then the mask logits.

    ``x: (N, H, W, C_in) -> (N, H_out, W_out, features)``.
    """

    features: int
    kernel_size: KernelSize
    stride: IntOrSeq = 1
    padding: PaddingLike = "SAME"
    dilation: IntOrSeq = 1
    groups: int = 1
    offset_groups: int = 1
    use_mask: bool = True
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        check_kernel_size(self.kernel_size, ranks=(2,))
        check_positive_int("groups", self.groups)
        check_divides("groups", self.groups, "features", self.features)
        check_positive_int("offset_groups", self.offset_groups)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = resolve_kernel_size(self.kernel_size, x.shape, ranks=(2,))
        c_in = x.shape[-1]
        check_divides("groups", self.groups, "the input channels of x", c_in)
        check_divides("offset_groups", self.offset_groups, "the input channels of x", c_in)
        offsets, mask = self._predict_offsets(x, kh * kw)
        kernel = self._kernel("kernel", (kh, kw, c_in // self.groups, self.features))
        bias = self._bias(self.features)
        x, offsets, mask, kernel, bias = promote_dtype(
            x, offsets, mask, kernel, bias, dtype=self.dtype
        )
        return ops.deformable_conv2d(
            x,
            offsets,
            kernel,
            bias,
            mask,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            offset_groups=self.offset_groups,
            padding_mode=self.padding_mode,
        )

    def _predict_offsets(self, x: jax.Array, taps: int) -> tuple[jax.Array, jax.Array | None]:
        """Offsets ``(N, H_out, W_out, offset_groups * taps * 2)`` and mask (or None)."""
        n_offsets = self.offset_groups * taps * 2
        n_mask = self.offset_groups * taps if self.use_mask else 0
        predicted = Conv(
            n_offsets + n_mask,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            padding_mode=self.padding_mode,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            kernel_init=nn.initializers.zeros,
            bias_init=nn.initializers.zeros,
            name="offset_conv",
        )(x)
        offsets = predicted[..., :n_offsets]
        mask = 2 * jax.nn.sigmoid(predicted[..., n_offsets:]) if self.use_mask else None
        return offsets, mask
