"""Network in Network with global average pooling (104,266 params) on MNIST.

Three mlpconv blocks (a kxk conv then two 1x1 convs), no dense layer.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_nin

Hardware and runtime: the 2-core x86 CPU, no GPU: 51 s of training for 1 epoch at 1,378
images/s, peak RSS 1.3 GiB.
Expected: final test accuracy 97.45 % (seed 0) (the paper reports 99.53 % with a wider
network).

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128) but
1 epoch with 0.25 of warm-up instead of 12 with 3, to keep the run to minutes on
the 2-core CPU; random shifts of up to 2 pixels; dropout 0.5 after each pooling, as in the paper.
Blocks (kernel size, features): 5x5/32, 5x5/64, 3x3/64, the last ending in 10 maps.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "nin"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.blocks = ((5, 32), (5, 64), (3, 64))
    c.model.kwargs.dropout = 0.5

    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 1
    c.schedule.warmup_epochs = 0.25
    return c
