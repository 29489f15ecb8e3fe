"""The slot CNN (11,914 params with standard convs) on MNIST: the base of the "which
conv in the same slot" ablation (experiments/sweeps/slot_conv.py).

Two plain 3x3 conv stages with max-pooling, then two 3x3 convs of the kind
``model.kwargs.conv`` on the 7x7 maps ("standard", "depthwise_separable",
"spatially_separable", "dilated", "deformable"), global average pooling, dense 10.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_slot_cnn
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_slot_cnn \
      --config.model.kwargs.conv=deformable

Hardware and runtime: the 2-core x86 CPU, no GPU: 22 s of training for 3 epochs at 9,563
images/s, peak RSS 0.9 GiB, with standard convs; deformable ones run at about a third of
that (mnist_deformable: 2,504 images/s).
Expected: final test accuracy 97.18 % (seed 0), with standard convs.

Recipe: that of mnist_lenet (Adam, one-cycle schedule peaking at 3e-3, batch 128, random
shifts of up to 2 pixels) but 3 epochs with 0.75 of warm-up instead of 12 with 3, to keep
the run to minutes on the 2-core CPU.
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.model.name = "slot_cnn"
    c.model.kwargs.num_classes = 10
    c.model.kwargs.conv = "standard"
    c.model.kwargs.features = (16, 32)
    c.model.kwargs.slot_features = (16, 16)

    # A short schedule keeps the run to minutes on a 2-core CPU (see the docstring).
    c.total_epochs = 3
    c.schedule.warmup_epochs = 0.75
    return c
