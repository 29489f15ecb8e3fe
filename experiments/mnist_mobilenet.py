"""A small MobileNet of depthwise-separable blocks (136,202 params) on MNIST.

A stem and five depthwise-separable blocks with batch norm, width multiplier alpha = 1.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_mobilenet
  ... --config.model.kwargs.standard_convs=True   # standard 3x3 convs: 1,128,938 params
  ... --config.model.kwargs.alpha=0.5             # half the channels

Hardware and runtime: the 2-core x86 CPU, no GPU: TODO: measure.
Expected: final test accuracy TODO: measure. Cost per image forward: 12.2 M multiply-adds
separable, 101.4 M with standard convs.

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128, 12
epochs, random shifts of up to 2 pixels).
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.get_config()
    c.dataset.name = "mnist"
    c.dataset.mean = 0.1307  # MNIST's pixel mean and std
    c.dataset.std = 0.3081
    c.model.name = "mobilenet_small"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.alpha = 1.0
    c.model.kwargs.standard_convs = False
    c.model.kwargs.blocks = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1))  # (channels, stride)

    c.batch_size = 128
    c.total_epochs = 12
    c.optimizer.name = "adam"
    c.optimizer.base_lr = 3e-3
    c.schedule.name = "onecycle"
    c.schedule.warmup_epochs = 3.0
    c.schedule.init_lr_fraction = 0.04
    c.schedule.final_lr_fraction = 1e-3
    c.augment.name = "random_shift"
    c.augment.max_shift = 2
    c.target_accuracy = 0.99
    return c
