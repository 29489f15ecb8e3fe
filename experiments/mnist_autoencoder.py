"""A convolutional autoencoder (46,857 params) reconstructing MNIST digits.

Strided 3x3 convs encode a 28x28 digit into a 7x7x8 code (392 numbers); stride-2
transposed convs decode it. Trained on the squared error of the normalised pixels
(``task="reconstruction"``); the metric is the test PSNR in dB on the [0, 1] scale, and the
run writes ``reconstructions.png`` (test digits above their reconstructions).

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --exp mnist_autoencoder

Hardware and runtime: the 2-core x86 CPU, no GPU: 59 s of training for 3 epochs at 3,379
images/s, peak RSS 1.1 GiB.
Expected: final test PSNR 30.40 dB (seed 0).

Recipe: the MNIST recipe's Adam and one-cycle schedule, without augmentation (the
target is the input itself), 3 epochs (0.75 of warm-up).
"""

import ml_collections

from cnnjax.training import defaults


def get_config() -> ml_collections.ConfigDict:
    c = defaults.mnist_config()
    c.task = "reconstruction"
    c.model.name = "conv_autoencoder"
    c.model.kwargs.widths = (32, 64)
    c.model.kwargs.latent = 8
    c.augment.name = "none"
    c.target_accuracy = None
    c.target_psnr = 20.0
    # The decoder's transposed convs make it ~12x LeNet's cost per image: 3 epochs keep
    # the run to minutes on a 2-core CPU.
    c.total_epochs = 3
    c.schedule.warmup_epochs = 0.75
    return c
