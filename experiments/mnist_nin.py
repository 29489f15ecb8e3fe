"""Network in Network with global average pooling (104,266 params) on MNIST.

Three mlpconv blocks (a kxk conv then two 1x1 convs), no dense layer.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_nin

Hardware and runtime: the 2-core x86 CPU, no GPU: TODO: measure.
Expected: final test accuracy TODO: measure (the paper reports 99.53 % with a wider
network).

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128, 12
epochs, random shifts of up to 2 pixels); dropout 0.5 after each pooling, as in the paper.
Blocks (kernel size, features): 5x5/32, 5x5/64, 3x3/64, the last ending in 10 maps.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.get_config()
    c.dataset.name = "mnist"
    c.dataset.mean = 0.1307  # MNIST's pixel mean and std
    c.dataset.std = 0.3081
    c.model.name = "nin"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.blocks = ((5, 32), (5, 64), (3, 64))
    c.model.kwargs.dropout = 0.5

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
