"""The Keras book's MNIST convnet (93,322 params) on MNIST.

Three 3x3 VALID convs with max-pooling between them, dense 64, dense 10.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_keras_book_cnn

Hardware and runtime: the 2-core x86 CPU, no GPU: 51 s of training for 6 epochs at
7,908 images/s, peak RSS 1.1 GiB.
Expected: final test accuracy 99.44 % (seed 0) (the issue asks >= 99.0 %; the book reports
about 99.1 % after 5 epochs of RMSprop at batch 64).

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128) but
6 epochs with 1.5 of warm-up instead of 12 with 3, to keep the run to minutes on
the 2-core CPU; random shifts of up to 2 pixels.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "keras_book_cnn"
    c.model.kwargs.num_classes = 10

    # 9 steps per jitted call (468 steps per epoch = 52 calls): 1.07-1.23x the images/s of
    # one step per call on the 2-core CPU (benchmarks/RESULTS.md).
    c.steps_per_call = 9
    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 6
    c.schedule.warmup_epochs = 1.5
    return c
