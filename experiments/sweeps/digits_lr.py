"""Learning rate x 2 on LeNet-5 and scikit-learn's digits: a sweep that runs anywhere, fast.

The smallest complete sweep (nothing to download): two peak learning rates of
``digits_lenet``, 3 seeds each, paired by seed. Try the sweep machinery with it (report,
resume, ``--workers 2``, ``--executor ray``, ``--sweep.vmap_seeds``) before a real ablation.

Command:
  python launch.py --sweep digits_lr

Size: 2 points x 3 seeds = 6 runs of 4 epochs (of 89 steps of 16 digits).
Expected CPU time: under a minute on a 2-core CPU with the seeds vmapped (the default when
runs go one after another in one process); final test accuracy around 90 % at both rates.
"""

from cnnjax.sweeps.spec import Sweep


def get_sweep() -> Sweep:
    return Sweep(
        experiment="digits_lenet",
        axes={"optimizer.base_lr": [1e-3, 3e-3]},
        seeds=3,
        metrics=("final_test_accuracy", "final_test_loss"),
        baseline="0.001",
        overrides={"total_epochs": 4},
    )
