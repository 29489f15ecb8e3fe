"""Pooling: max vs average vs stride-2 convolution for downsampling, on LeNet-5 (MNIST).

``model.kwargs.pool`` of ``lenet5``: ``max`` (today's network, conv and 2x2 max-pool fused
in ConvMaxPool), ``avg`` (conv, ReLU, 2x2 average pool) and ``strided_conv`` (conv, ReLU,
a learned 2x2 stride-2 conv of the same width, ReLU: the pool's window with learned
weights, +1,190 params). Everything else, including the seeds' init streams and data
order, is shared, so the comparison with ``max`` is paired.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --sweep pooling

Size: 3 points x 3 seeds = 9 runs.
Schedule: mnist_lenet's recipe shortened to 3 epochs (0.6 of warm-up, the same fifth as
its 10 with 2), so the suite fits the 2-core CPU; at 3 epochs LeNet is close to, not at,
its 99.26 % of 10 epochs, so differences of a tenth of a point are within seed noise.
Expected CPU time (estimated from the README's images/s, not yet measured): ~3 min; max
runs at ~30,000 images/s (~10 s a run with compilation and evaluation), avg and
strided_conv are not fused (LeNet ran at ~9,000 images/s unfused: ~25 s a run).
"""

from cnnjax.sweeps.spec import Sweep


def get_sweep() -> Sweep:
    return Sweep(
        experiment="mnist_lenet",
        axes={"model.kwargs.pool": ["max", "avg", "strided_conv"]},
        seeds=3,
        metrics=("final_test_accuracy", "final_test_loss"),
        baseline="max",
        overrides={"total_epochs": 3, "schedule.warmup_epochs": 0.6},
    )
