"""Pixel-sequential MNIST with a temporal convolutional network (5,002 params).

The image is read as 784 steps of one pixel (raster order). Ten residual blocks, each a
2-tap causal conv (16 filters, dilation 1, 2, 4, ..., 512, padded on the left only) with
a ReLU after the skip is added; the classes are read from the last step. The receptive
field is 1 + (2 - 1)(1 + 2 + ... + 512) = 1024 >= 784 steps, so the last step sees every
pixel; no step sees a later one (``cnnjax.models.conv1d_seq``).

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_tcn

Hardware and runtime: the 2-core x86 CPU, no GPU: 208 s of training for 6 epochs at 2,076
images/s, peak RSS 2.2 GiB.
Expected: final test accuracy 95.51 % (seed 0).

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128,
random shifts of up to 2 pixels), but 6 epochs with 1.5 of warm-up instead of 12 with 3:
every layer runs at all 784 steps, 3.65 M multiply-adds per image forward against the
0.56 M of mnist_conv1d_seq, in 16-channel convs that are memory-bound on the CPU (about
16x fewer images/s than mnist_conv1d_seq here).
"""

import ml_collections

from cnnjax.training import defaults

LAYERS = 10


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "conv1d_seq"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.sequence = "pixels"
    c.model.kwargs.features = (16,) * LAYERS
    c.model.kwargs.kernel_size = 2
    c.model.kwargs.dilations = tuple(2**i for i in range(LAYERS))
    c.model.kwargs.pools = (1,) * LAYERS
    c.model.kwargs.causal = True
    c.model.kwargs.residual = True
    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 6
    c.schedule.warmup_epochs = 1.5
    return c
