"""A dilated-conv network without pooling (28,394 params) on MNIST.

3x3 convs with dilations 1, 2, 4, 8 at full resolution, global average pooling, dense 10.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_dilated

Hardware and runtime: the 2-core x86 CPU, no GPU: 54 s of training for 1 epoch at 1,255
images/s, peak RSS 1.2 GiB.
Expected: final test accuracy 96.50 % (seed 0).

The receptive field of every logit is 1 + 2 * (1 + 2 + 4 + 8) = 31 pixels per side
(``cnnjax.models.dilated.receptive_field``), enough to cover the 28x28 digit.

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128) but
1 epoch with 0.25 of warm-up instead of 12 with 3, to keep the run to minutes on
the 2-core CPU; random shifts of up to 2 pixels.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "dilated_cnn"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.features = 32
    c.model.kwargs.dilations = (1, 2, 4, 8)

    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 1
    c.schedule.warmup_epochs = 0.25
    return c
