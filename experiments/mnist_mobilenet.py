"""A small MobileNet of depthwise-separable blocks (136,202 params) on MNIST.

A stem and five depthwise-separable blocks with batch norm, width multiplier alpha = 1.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_mobilenet
  ... --config.model.kwargs.standard_convs=True   # standard 3x3 convs: 1,128,938 params
  ... --config.model.kwargs.alpha=0.5             # half the channels

Hardware and runtime: the 2-core x86 CPU, no GPU: 162 s of training for 2 epochs at 802
images/s, peak RSS 1.7 GiB (its depthwise and 1x1 convs by oneDNN).
Expected: final test accuracy 99.17 % (seed 0). Cost per image forward: 12.2 M multiply-adds
separable, 101.4 M with standard convs.

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128) but
2 epochs with 0.5 of warm-up instead of 12 with 3, to keep the run to minutes on
the 2-core CPU; random shifts of up to 2 pixels.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "mobilenet_small"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.alpha = 1.0
    c.model.kwargs.standard_convs = False
    c.model.kwargs.blocks = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1))  # (channels, stride)

    # 9 steps per jitted call (468 steps per epoch = 52 calls): 1.07-1.23x the images/s of
    # one step per call on the 2-core CPU (benchmarks/RESULTS.md).
    c.steps_per_call = 9
    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 2
    c.schedule.warmup_epochs = 0.5
    return c
