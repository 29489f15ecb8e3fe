"""A small GoogLeNet of Inception modules (60,114 params) on MNIST.

A 3x3 stem, GoogLeNet's modules 3a, 3b and 4a at a quarter width, global average pooling.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_inception

Hardware and runtime: the 2-core x86 CPU, no GPU: 178 s of training for 3 epochs at 1,096
images/s, peak RSS 2.2 GiB.
Expected: final test accuracy 98.97 % (seed 0).

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128) but
3 epochs with 0.75 of warm-up instead of 12 with 3, to keep the run to minutes on
the 2-core CPU; random shifts of up to 2 pixels; dropout 0.4 before the dense layer, as GoogLeNet.
"""

import ml_collections

from cnnjax.models.inception import INCEPTION_3A, INCEPTION_3B, INCEPTION_4A
from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "inception_small"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.stem_features = 48
    c.model.kwargs.stages = ((INCEPTION_3A, INCEPTION_3B), (INCEPTION_4A,))
    c.model.kwargs.dropout = 0.4

    # 9 steps per jitted call (468 steps per epoch = 52 calls): 1.07-1.23x the images/s of
    # one step per call on the 2-core CPU (benchmarks/RESULTS.md).
    c.steps_per_call = 9
    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 3
    c.schedule.warmup_epochs = 0.75
    return c
