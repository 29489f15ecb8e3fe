"""The Keras book's MNIST convnet (93,322 params) on MNIST.

Three 3x3 VALID convs with max-pooling between them, dense 64, dense 10.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_keras_book_cnn

Hardware and runtime: the 2-core x86 CPU, no GPU: TODO: measure.
Expected: final test accuracy TODO: measure (the issue asks >= 99.0 %; the book reports
about 99.1 % after 5 epochs of RMSprop at batch 64).

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
    c.model.name = "keras_book_cnn"
    c.model.kwargs.num_classes = 10

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
