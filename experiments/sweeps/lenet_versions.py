"""LeNet-5 as published in 1998 vs LeNet-5 modern, with the same recipe (MNIST).

The point ``modern`` is mnist_lenet (``lenet5``: ReLU, max-pooling, 61,706 params);
``classic`` swaps in ``lenet5_classic`` (trainable subsampling, the Table I C3 connections,
scaled tanh; 60,850 params), which needs the paper's 32x32 input: ``dataset.pad = 2``.
Optimiser, schedule, batch, augmentation and the seeds' data order are mnist_lenet's for
both (mnist_lenet_classic's own recipe differs: batch 128, 12 epochs).

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --sweep lenet_versions

Size: 2 points x 3 seeds = 6 runs.
Schedule: mnist_lenet's recipe shortened to 3 epochs (0.6 of warm-up), as in the pooling
sweep, so the suite fits the 2-core CPU; neither network is converged.
Expected CPU time (estimated from the README's images/s, not yet measured): ~2.5 min;
modern ~10 s a run (~30,000 images/s), classic ~40 s (~5,300 images/s).
"""

from cnnjax.sweeps.spec import Sweep


def get_sweep() -> Sweep:
    return Sweep(
        experiment="mnist_lenet",
        points={
            "modern": {},
            "classic": {"model.name": "lenet5_classic", "dataset.pad": 2},
        },
        seeds=3,
        metrics=("final_test_accuracy", "final_test_loss"),
        baseline="modern",
        overrides={"total_epochs": 3, "schedule.warmup_epochs": 0.6},
    )
