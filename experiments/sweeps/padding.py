"""Padding: SAME vs VALID in both convs of LeNet-5, against its classic mix (MNIST).

``model.kwargs.padding`` of ``lenet5``: the point ``mixed`` leaves it at ``None`` (today's
network: conv1 SAME, conv2 VALID, a 5x5x16 flatten); ``SAME`` pads both 5x5 convs (a
7x7x16 flatten: dense1 grows to 94,200 params), ``VALID`` neither (4x4x16: dense1 30,840).
The feature maps' size, and with it the dense layer's, is part of what padding changes;
the report's params column shows it.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --sweep padding

Size: 3 points x 3 seeds = 9 runs.
Schedule: mnist_lenet's recipe shortened to 3 epochs (0.6 of warm-up), as in the pooling
sweep, so the suite fits the 2-core CPU; runs are not converged.
Expected CPU time (estimated from the README's ~30,000 images/s of mnist_lenet, not yet
measured): ~2 min, ~10-15 s a run (all three keep the fused ConvMaxPool).
"""

from cnnjax.sweeps.spec import Sweep


def get_sweep() -> Sweep:
    return Sweep(
        experiment="mnist_lenet",
        points={
            "mixed": {},
            "SAME": {"model.kwargs.padding": "SAME"},
            "VALID": {"model.kwargs.padding": "VALID"},
        },
        seeds=3,
        metrics=("final_test_accuracy", "final_test_loss"),
        baseline="mixed",
        overrides={"total_epochs": 3, "schedule.warmup_epochs": 0.6},
    )
