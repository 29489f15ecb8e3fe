"""1x1 bottlenecks (Inception modules) vs a plain stack of 3x3 convs at a similar
parameter budget, on the small GoogLeNet (MNIST).

``model.kwargs.block`` of ``inception_small``: ``inception`` (today's network, 60,114
params) or ``plain``, each Inception module replaced by one 3x3 conv + ReLU as wide as
the stem (48 filters): 63,322 params (+5.3 %). Stem, pools, global average pooling,
dropout and head are shared, as are the seeds' init streams and data order.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --sweep inception_block

Size: 2 points x 3 seeds = 6 runs.
Schedule: mnist_inception's recipe on the first 20,000 training images for 1 epoch (0.25
of warm-up): at ~400 images/s on the 2-core CPU its 3 full epochs take 8 minutes a run.
The full test split is reported; the runs are far from converged (mnist_inception reaches
99.0 % after 3 full epochs), so this compares early learning.
Expected CPU time (estimated from the README's 405 images/s, not yet measured): ~7 min,
~70 s a run (50 s of training, evaluation of the 10,000 test images, compilation).
"""

from cnnjax.sweeps.spec import Sweep


def get_sweep() -> Sweep:
    return Sweep(
        experiment="mnist_inception",
        axes={"model.kwargs.block": ["inception", "plain"]},
        seeds=3,
        metrics=("final_test_accuracy", "final_test_loss"),
        baseline="inception",
        overrides={
            "dataset.train_split": "train[:20000]",
            "total_epochs": 1,
            "schedule.warmup_epochs": 0.25,
        },
    )
