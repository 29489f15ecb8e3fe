"""A dilated-conv network without pooling (28,394 params) on MNIST.

3x3 convs with dilations 1, 2, 4, 8 at full resolution, global average pooling, dense 10.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_dilated

Hardware and runtime: the 2-core x86 CPU, no GPU: TODO: measure.
Expected: final test accuracy TODO: measure.

The receptive field of every logit is 1 + 2 * (1 + 2 + 4 + 8) = 31 pixels per side
(``cnnjax.models.dilated.receptive_field``), enough to cover the 28x28 digit.

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
    c.model.name = "dilated_cnn"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.features = 32
    c.model.kwargs.dilations = (1, 2, 4, 8)

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
