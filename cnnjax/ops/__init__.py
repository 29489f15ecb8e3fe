"""Pure, jit/grad/vmap-safe convolution and pooling ops, channels-last.

Layouts: ``x`` ``(N, *spatial, C_in)`` with 1-3 spatial dims, kernel ``w``
``(*kernel_spatial, C_in // groups, C_out)``, bias ``b`` ``(C_out,)`` or ``None``.
"""

from cnnjax.ops._args import conv_output_shape
from cnnjax.ops.conv import (
    conv,
    conv1d,
    conv2d,
    conv3d,
    conv_max_pool,
    conv_transpose,
    depthwise_conv,
    separable_conv,
    spatially_separable_conv2d,
)
from cnnjax.ops.deformable import deformable_conv2d
from cnnjax.ops.pooling import (
    avg_pool,
    global_avg_pool,
    global_max_pool,
    max_pool,
    max_unpool,
    pool,
)

__all__ = [
    "avg_pool",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_max_pool",
    "conv_output_shape",
    "conv_transpose",
    "deformable_conv2d",
    "depthwise_conv",
    "global_avg_pool",
    "global_max_pool",
    "max_pool",
    "max_unpool",
    "pool",
    "separable_conv",
    "spatially_separable_conv2d",
]
