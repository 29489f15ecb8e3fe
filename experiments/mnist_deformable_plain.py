"""The plain-conv twin of mnist_deformable (11,914 params) on rotated/scaled MNIST.

mnist_deformable's config with ``model.kwargs.deformable = False``: the same network,
recipe, distortion and distorted test digits, with plain 3x3 convs where that one has
deformable ones, so the two test accuracies isolate what the deformable sampling buys.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_deformable_plain

Hardware and runtime: the 2-core x86 CPU, no GPU: 42 s of training for 6 epochs at 9,525
images/s, peak RSS 0.9 GiB.
Expected: final test accuracy on the distorted test digits 95.27 % (seed 0).

Recipe: that of mnist_deformable.
"""

from pathlib import Path

import ml_collections

from cnnjax.training import load_experiment


def get_config() -> ml_collections.ConfigDict:
    c = load_experiment("mnist_deformable", Path(__file__).parent)
    c.model.kwargs.deformable = False
    return c
