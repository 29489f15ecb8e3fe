"""An AlexNet for 32x32 with two-group convs (1,895,626 params) on CIFAR-10.

5 conv + 3 dense, conv2/conv4/conv5 in two groups as the original.

Command (needs CIFAR-10 prepared in a TFDS data directory; it is not in ../shared/tfds):
  TFDS_DATA_DIR=/path/to/tfds python launch.py --exp cifar10_alexnet

Hardware and runtime: TODO: measure (not run here: no CIFAR-10 on the 2-core machine).
Expected: final test accuracy TODO: measure.

Recipe: Adam with a one-cycle schedule peaking at 1e-3, batch 128, 30 epochs, random shifts of up to
4 pixels (the trainer has no horizontal flips yet, the other half of the usual CIFAR augmentation);
dropout 0.5 after fc6 and fc7. Pixels are normalised with one mean and std over all three channels
(the trainer takes scalars).
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.cifar10_config()
    c.model.name = "alexnet_small"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.groups = 2
    c.model.kwargs.widths = (48, 128, 192, 192, 128)  # AlexNet's, halved
    c.model.kwargs.hidden = 512
    c.model.kwargs.dropout = 0.5

    c.optimizer.base_lr = 1e-3
    return c
