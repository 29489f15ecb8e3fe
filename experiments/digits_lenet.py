"""LeNet-5 on scikit-learn's real 8x8 handwritten digits: runs anywhere, nothing to download.

Command:
  python launch.py --exp digits_lenet

Hardware and runtime: a 2-core x86 CPU, no GPU: about 15 s with compilation (8 epochs of
89 steps), measured while other jobs shared the machine.
Expected: final test accuracy about 93 % on the 360 held-out digits (the last 20 % of
the set, written by other people than the training digits).

The 8x8 digits are zero-padded to 16x16 so that LeNet-5's VALID 5x5 conv fits after the
first pooling (dense1 then has 64 inputs: 21,386 params in all). Needs scikit-learn (the
``dev`` extra). Also the data of the learning test in ``tests/test_train.py``.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.get_config()
    c.dataset.name = "sklearn_digits"
    c.dataset.mean = 0.3  # about the digits' pixel mean and std
    c.dataset.std = 0.4
    c.dataset.pad = 4  # 8x8 -> 16x16
    c.model.name = "lenet5"
    c.model.kwargs.num_classes = 10

    c.batch_size = 16
    c.eval_batch_size = 120
    c.total_epochs = 8
    c.optimizer.name = "adam"
    c.optimizer.base_lr = 2e-3
    c.optimizer.base_batch_size = 16
    c.schedule.name = "cosine"
    c.schedule.warmup_epochs = 1.0
    c.target_accuracy = 0.9
    return c
