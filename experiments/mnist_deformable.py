"""A CNN whose last two convs are deformable v2 (23,632 params) on rotated/scaled MNIST.

Two plain 3x3 conv stages with max-pooling, then two 3x3 deformable convs (v2, with a
modulation mask) on the 7x7 maps, global average pooling, dense 10. Its plain-conv twin,
the same network with plain convs in their place, is experiments/mnist_deformable_plain.py.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_deformable
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_deformable_plain   # the twin

Hardware and runtime: the 2-core x86 CPU, no GPU: 99 s of training for 6 epochs at
4,033 images/s, peak RSS 1.3 GiB.
Expected: final test accuracy on the distorted test digits 98.30 % (seed 0), against
95.27 % for the plain twin (mnist_deformable_plain, 42 s): +3.0 points from the deformable
sampling.

Distortion: every training image, and once (with a fixed key) every test image, is rotated
by an angle uniform in [-45, 45] degrees and scaled by a factor uniform in [0.7, 1.2] about
its centre (``cnnjax.training.augment.random_affine``), so both twins are trained and
evaluated on the same distribution. Why these ranges: 45 degrees is a strong tilt that
still keeps the 6/9 pair (180 degrees apart) distinguishable; MNIST digits fill a 20x20 box
in the 28x28 frame, so 0.7 leaves a 14-pixel digit (3 to 4 cells across on the 7x7 maps
the deformable convs see) and 1.2 a 24-pixel one that, even rotated, loses at most the
box's corners, where digits have little ink, to the frame.

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128) but
6 epochs with 1.5 of warm-up instead of 12 with 3, to keep the run to minutes on
the 2-core CPU, with the random rotation/scale in place of its random shifts.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "deformable_cnn"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.features = (16, 32)
    c.model.kwargs.deformable_features = (16, 16)
    c.model.kwargs.deformable = True

    c.augment.name = "random_affine"
    c.augment.max_degrees = 45.0
    c.augment.min_scale = 0.7
    c.augment.max_scale = 1.2
    c.augment.distort_test = True  # evaluate on the distorted test digits

    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 6
    c.schedule.warmup_epochs = 1.5
    return c
