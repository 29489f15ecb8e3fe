"""A small MobileNet of depthwise-separable blocks (136,778 params) on CIFAR-10.

A stem and five depthwise-separable blocks with batch norm, width multiplier alpha = 1.

Command (needs CIFAR-10 prepared in a TFDS data directory; it is not in ../shared/tfds):
  TFDS_DATA_DIR=/path/to/tfds python launch.py --exp cifar10_mobilenet

Hardware and runtime: TODO: measure (not run here: no CIFAR-10 on the 2-core machine).
Expected: final test accuracy TODO: measure.

Recipe: Adam with a one-cycle schedule peaking at 3e-3, batch 128, 30 epochs, random shifts of up to
4 pixels (the trainer has no horizontal flips yet, the other half of the usual CIFAR augmentation);
batch norm after every conv; --config.model.kwargs.standard_convs=True gives the same net with
standard 3x3 convs. Pixels are normalised with one mean and std over all three channels (the trainer
takes scalars).
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.cifar10_config()
    c.model.name = "mobilenet_small"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.alpha = 1.0
    c.model.kwargs.standard_convs = False
    c.model.kwargs.blocks = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1))  # (channels, stride)

    return c
