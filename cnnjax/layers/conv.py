"""Convolution layers: thin ``flax.linen`` wrappers that create parameters and call an op.

Every layer takes channels-last input ``(N, *spatial, C_in)`` and hands its parameters to
the matching function of :mod:`cnnjax.ops`, which holds the maths. ``kernel_size`` is an
int or one int per spatial dim; a sequence fixes the spatial rank, an int takes it from the
input. Options after the geometry (``use_bias``, ``dtype``, ``param_dtype``,
``kernel_init``, ``bias_init``) are keyword-only.

``padding`` takes every form of the ops (``"SAME"``, ``"SAME_LOWER"``, ``"VALID"``,
``"CAUSAL"``, ``"CIRCULAR"``, ``"REFLECT"``, ``"REPLICATE"``, ints, mixed per-dim entries,
negative amounts cropping) and ``padding_mode`` (``"zeros"``, ``"reflect"``,
``"replicate"``, ``"circular"``) how padded cells are filled, as in PyTorch.

``dtype`` is the compute dtype (e.g. ``jnp.bfloat16`` for mixed precision; ``None`` infers
it from the input and parameters); parameters are stored in ``param_dtype``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax.typing import DTypeLike

from cnnjax import ops
from cnnjax.layers._checks import (
    KernelSize,
    check_divides,
    check_kernel_size,
    check_positive_int,
    resolve_kernel_size,
)
from cnnjax.ops._args import IntOrSeq, PaddingLike

Initializer = nn.initializers.Initializer


class ConvLayer(nn.Module):
    """Fields and parameter helpers shared by the convolution layers (not used directly)."""

    _: dataclasses.KW_ONLY
    use_bias: bool = True
    dtype: DTypeLike | None = None
    param_dtype: DTypeLike = jnp.float32
    kernel_init: Initializer = nn.initializers.lecun_normal()
    bias_init: Initializer = nn.initializers.zeros

    def _kernel(self, name: str, shape: tuple[int, ...]) -> jax.Array:
        return self.param(name, self.kernel_init, shape, self.param_dtype)

    def _bias(self, features: int) -> jax.Array | None:
        if not self.use_bias:
            return None
        return self.param("bias", self.bias_init, (features,), self.param_dtype)


class Conv(ConvLayer):
    """N-d (1-3) convolution, :func:`cnnjax.ops.conv`.

    Attributes:
      features: output channels ``C_out``.
      kernel_size: int or one int per spatial dim.
      stride, padding, dilation, groups, padding_mode: as for :func:`cnnjax.ops.conv`.

    Params: ``kernel`` ``(*kernel_size, C_in // groups, features)``, ``bias`` ``(features,)``.

    ``x: (N, *spatial, C_in) -> (N, *out_spatial, features)``.
    """

    features: int
    kernel_size: KernelSize
    stride: IntOrSeq = 1
    padding: PaddingLike = "SAME"
    dilation: IntOrSeq = 1
    groups: int = 1
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        check_kernel_size(self.kernel_size)
        check_positive_int("groups", self.groups)
        check_divides("groups", self.groups, "features", self.features)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = resolve_kernel_size(self.kernel_size, x.shape)
        c_in = x.shape[-1]
        check_divides("groups", self.groups, "the input channels of x", c_in)
        kernel = self._kernel("kernel", (*k, c_in // self.groups, self.features))
        bias = self._bias(self.features)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return ops.conv(
            x,
            kernel,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,
        )


class ConvMaxPool(ConvLayer):
    """Stride-1 convolution then non-overlapping max-pooling, :func:`cnnjax.ops.conv_max_pool`.

    Same parameters (and names) as :class:`Conv`; the output equals ``MaxPool(pool)`` after
    ``Conv``, computed in one op (faster on CPU). Apply a ReLU after it: it commutes with
    the max.

    Attributes:
      features: output channels ``C_out``.
      kernel_size: int or one int per spatial dim.
      padding, padding_mode: the convolution's, as for :func:`cnnjax.ops.conv`.
      pool: pooling window and stride, int or one int per spatial dim.

    Params: ``kernel`` ``(*kernel_size, C_in, features)``, ``bias`` ``(features,)``.

    ``x: (N, *spatial, C_in) -> (N, *(conv_out_spatial // pool), features)``.
    """

    features: int
    kernel_size: KernelSize
    padding: PaddingLike = "SAME"
    pool: IntOrSeq = 2
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        check_kernel_size(self.kernel_size)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = resolve_kernel_size(self.kernel_size, x.shape)
        kernel = self._kernel("kernel", (*k, x.shape[-1], self.features))
        bias = self._bias(self.features)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return ops.conv_max_pool(
            x, kernel, bias, padding=self.padding, pool=self.pool, padding_mode=self.padding_mode
        )


class DepthwiseConv(ConvLayer):
    """Depthwise convolution, :func:`cnnjax.ops.depthwise_conv`.

    Each input channel gets its own ``multiplier`` filters.

    Params: ``kernel`` ``(*kernel_size, 1, C_in * multiplier)``, ``bias``
    ``(C_in * multiplier,)``.

    ``x: (N, *spatial, C_in) -> (N, *out_spatial, C_in * multiplier)``.
    """

    kernel_size: KernelSize
    multiplier: int = 1
    stride: IntOrSeq = 1
    padding: PaddingLike = "SAME"
    dilation: IntOrSeq = 1
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        check_kernel_size(self.kernel_size)
        check_positive_int("multiplier", self.multiplier)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = resolve_kernel_size(self.kernel_size, x.shape)
        c_out = x.shape[-1] * self.multiplier
        kernel = self._kernel("kernel", (*k, 1, c_out))
        bias = self._bias(c_out)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return ops.depthwise_conv(
            x,
            kernel,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            padding_mode=self.padding_mode,
        )


class SeparableConv(ConvLayer):
    """Depthwise-separable convolution, :func:`cnnjax.ops.separable_conv`.

    A depthwise convolution (``multiplier`` filters per input channel) followed by a 1x1
    convolution to ``features`` channels; the bias is added once, after the 1x1.

    Params: ``depthwise_kernel`` ``(*kernel_size, 1, C_in * multiplier)``,
    ``pointwise_kernel`` ``(1, ..., 1, C_in * multiplier, features)``, ``bias``
    ``(features,)``.

    ``x: (N, *spatial, C_in) -> (N, *out_spatial, features)``.
    """

    features: int
    kernel_size: KernelSize
    multiplier: int = 1
    stride: IntOrSeq = 1
    padding: PaddingLike = "SAME"
    dilation: IntOrSeq = 1
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        check_kernel_size(self.kernel_size)
        check_positive_int("multiplier", self.multiplier)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = resolve_kernel_size(self.kernel_size, x.shape)
        c_mid = x.shape[-1] * self.multiplier
        w_depthwise = self._kernel("depthwise_kernel", (*k, 1, c_mid))
        w_pointwise = self._kernel("pointwise_kernel", (*(1,) * len(k), c_mid, self.features))
        bias = self._bias(self.features)
        x, w_depthwise, w_pointwise, bias = promote_dtype(
            x, w_depthwise, w_pointwise, bias, dtype=self.dtype
        )
        return ops.separable_conv(
            x,
            w_depthwise,
            w_pointwise,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            padding_mode=self.padding_mode,
        )


class SpatiallySeparableConv(ConvLayer):
    """A ``kh x 1`` then a ``1 x kw`` convolution, :func:`cnnjax.ops.spatially_separable_conv2d`.

    2-D only. Equals a ``kh x kw`` convolution whose kernel has rank ``mid_features``
    (``None``: ``features``) across its spatial taps.

    Params: ``col_kernel`` ``(kh, 1, C_in, mid_features)``, ``row_kernel``
    ``(1, kw, mid_features, features)``, ``bias`` ``(features,)``.

    ``x: (N, H, W, C_in) -> (N, H_out, W_out, features)``.
    """

    features: int
    kernel_size: KernelSize
    mid_features: int | None = None
    stride: IntOrSeq = 1
    padding: PaddingLike = "SAME"
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        check_kernel_size(self.kernel_size, ranks=(2,))
        if self.mid_features is not None:
            check_positive_int("mid_features", self.mid_features)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = resolve_kernel_size(self.kernel_size, x.shape, ranks=(2,))
        c_mid = self.features if self.mid_features is None else self.mid_features
        w_col = self._kernel("col_kernel", (kh, 1, x.shape[-1], c_mid))
        w_row = self._kernel("row_kernel", (1, kw, c_mid, self.features))
        bias = self._bias(self.features)
        x, w_col, w_row, bias = promote_dtype(x, w_col, w_row, bias, dtype=self.dtype)
        return ops.spatially_separable_conv2d(
            x,
            w_col,
            w_row,
            bias,
            stride=self.stride,
            padding=self.padding,
            padding_mode=self.padding_mode,
        )


class ConvTranspose(ConvLayer):
    """Transposed convolution, :func:`cnnjax.ops.conv_transpose`.

    The adjoint of :class:`Conv`: the kernel has the layout of the forward convolution
    being transposed (one that maps ``features`` channels to ``C_in``), so a ``Conv`` from
    ``A`` to ``B`` channels and a ``ConvTranspose`` from ``B`` to ``A`` channels have the same
    kernel shape. Output size with integer padding ``p``:
    ``(in - 1) * stride - 2p + dilation * (k - 1) + output_padding + 1`` (as PyTorch);
    ``"SAME"`` gives ``in * stride``. Zero padding only (``padding_mode`` has no adjoint).

    Params: ``kernel`` ``(*kernel_size, features // groups, C_in)``, ``bias`` ``(features,)``.
    The default initialiser counts fan-in over the transpose's own inputs (taps x ``C_in``).

    ``x: (N, *spatial, C_in) -> (N, *out_spatial, features)``.
    """

    features: int
    kernel_size: KernelSize
    stride: IntOrSeq = 1
    padding: PaddingLike = 0
    dilation: IntOrSeq = 1
    groups: int = 1
    output_padding: IntOrSeq = 0
    _: dataclasses.KW_ONLY
    kernel_init: Initializer = nn.initializers.lecun_normal(in_axis=-1, out_axis=-2)

    def __post_init__(self) -> None:
        check_positive_int("features", self.features)
        check_kernel_size(self.kernel_size)
        check_positive_int("groups", self.groups)
        check_divides("groups", self.groups, "features", self.features)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = resolve_kernel_size(self.kernel_size, x.shape)
        c_in = x.shape[-1]
        check_divides("groups", self.groups, "the input channels of x", c_in)
        kernel = self._kernel("kernel", (*k, self.features // self.groups, c_in))
        bias = self._bias(self.features)
        x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
        return ops.conv_transpose(
            x,
            kernel,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            output_padding=self.output_padding,
        )
