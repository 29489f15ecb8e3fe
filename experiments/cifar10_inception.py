"""A small GoogLeNet of Inception modules (60,978 params) on CIFAR-10.

A 3x3 stem, GoogLeNet's modules 3a, 3b and 4a at a quarter width, global average pooling.

Command (needs CIFAR-10 prepared in a TFDS data directory; it is not in ../shared/tfds):
  TFDS_DATA_DIR=/path/to/tfds python launch.py --exp cifar10_inception

Hardware and runtime: TODO: measure (not run here: no CIFAR-10 on the 2-core machine).
Expected: final test accuracy TODO: measure.

Recipe: Adam with a one-cycle schedule peaking at 3e-3, batch 128, 30 epochs, random shifts of up to
4 pixels (the trainer has no horizontal flips yet, the other half of the usual CIFAR augmentation);
dropout 0.4 before the dense layer, as GoogLeNet. Pixels are normalised with one mean and std over
all three channels (the trainer takes scalars).
"""

import ml_collections

from cnnjax.models.inception import INCEPTION_3A, INCEPTION_3B, INCEPTION_4A
from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.cifar10_config()
    c.model.name = "inception_small"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.stem_features = 48
    c.model.kwargs.stages = ((INCEPTION_3A, INCEPTION_3B), (INCEPTION_4A,))
    c.model.kwargs.dropout = 0.4

    return c
