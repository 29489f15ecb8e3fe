"""The TensorFlow tutorial's MNIST CNN (3,274,634 params) on MNIST.

Two 5x5 SAME convs with max-pooling, dense 1024, dropout 0.5, dense 10.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_tf_tutorial_cnn

Hardware and runtime: the 2-core x86 CPU, no GPU: 159 s of training for 5 epochs at 2,013
images/s, peak RSS 1.4 GiB.
Expected: final test accuracy 99.39 % (seed 0) (the issue asks >= 99.3 %; the tutorial
reports about 99.2 % after 20,000 steps of 50 with Adam at 1e-4 and no augmentation).

Recipe: Adam with a one-cycle schedule peaking at 1e-3 (lower than mnist_lenet's 3e-3:
the 3,136 x 1,024 dense layer holds 98 % of the weights), batch 128, 5 epochs (1.25 of
warm-up: 83 MFLOPs per training image make each epoch minutes on the 2-core CPU), random
shifts of up to 2 pixels, dropout 0.5 before the output layer.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "tf_tutorial_cnn"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.dropout = 0.5

    c.optimizer.base_lr = 1e-3
    c.target_accuracy = 0.993
    # 9 steps per jitted call (468 steps per epoch = 52 calls): 1.07-1.23x the images/s of
    # one step per call on the 2-core CPU (benchmarks/RESULTS.md).
    c.steps_per_call = 9
    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 5
    c.schedule.warmup_epochs = 1.25
    return c
