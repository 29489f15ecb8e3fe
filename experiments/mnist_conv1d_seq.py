"""Row-sequential MNIST with a 1-D conv net (64,874 params): 28 steps x 28 features.

Each image row is one time step of 28 features; three 5-tap 1-D convs (32, 64, 128
filters, ReLU) with max-pools of 2 after the first two, then a dense layer on the
flattened 7 x 128 steps. Every step of the last conv sees 32 rows, the whole image.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_conv1d_seq

Hardware and runtime: the 2-core x86 CPU, no GPU: 26 s of training for 12 epochs at
33,580 images/s, peak RSS 0.8 GiB.
Expected: final test accuracy 99.23 % (seed 0) (target >= 98.5 %).

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128, 12
epochs, random shifts of up to 2 pixels per axis: a vertical shift moves the sequence in
time, a horizontal one moves the features).
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "conv1d_seq"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.sequence = "rows"
    c.model.kwargs.features = (32, 64, 128)
    c.model.kwargs.kernel_size = 5
    c.model.kwargs.dilations = (1, 1, 1)
    c.model.kwargs.pools = (2, 2, 1)
    c.model.kwargs.causal = False
    c.model.kwargs.residual = False
    return c
