"""An AlexNet for 32x32 with two-group convs (475,322 params) on MNIST.

5 conv + 3 dense, conv2/conv4/conv5 in two groups as the original; MNIST padded to 32x32.
Widths 24/64/96/96/64 and 256-unit dense layers: a quarter of AlexNet's (cifar10_alexnet
uses half), to keep an MNIST run to minutes on a 2-core CPU.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_alexnet
  ... --config.model.kwargs.groups=1    # the same net without grouping (563,642 params)

Hardware and runtime: the 2-core x86 CPU, no GPU: 51 s of training for 1 epoch at 1,328
images/s, peak RSS 1.1 GiB (13.8 M multiply-adds per image forward).
Expected: final test accuracy 98.62 % (seed 0).

Recipe: Adam with a one-cycle schedule peaking at 1e-3, batch 128, 1 epoch (0.25 of
warm-up), random shifts of up to 2 pixels; dropout 0.5 after fc6 and fc7, as AlexNet.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.dataset.pad = 2  # 28x28 -> 32x32, the size the network is laid out for
    c.model.name = "alexnet_small"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.groups = 2
    c.model.kwargs.widths = (24, 64, 96, 96, 64)  # AlexNet's, quartered
    c.model.kwargs.hidden = 256
    c.model.kwargs.dropout = 0.5

    c.optimizer.base_lr = 1e-3
    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 1
    c.schedule.warmup_epochs = 0.25
    return c
