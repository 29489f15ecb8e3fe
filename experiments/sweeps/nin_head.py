"""Global average pooling vs flatten + dense as the classifier of Network in Network
(MNIST).

``model.kwargs.head`` of ``nin``: ``gap`` (today's network: the last 1x1 conv gives 10
maps, their spatial means are the logits; 104,266 params) or ``dense`` (the last block
ends in 64 maps with ReLU like the others, flattened into a dense layer; 139,146 params).
The mlpconv blocks, pools and dropout are shared, as are the seeds' init streams and data
order.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --sweep nin_head

Size: 2 points x 3 seeds = 6 runs.
Schedule: mnist_nin's recipe (1 epoch, 0.25 of warm-up) on the first 20,000 training
images: at ~520 images/s on the 2-core CPU a full epoch takes 2 minutes a run. The full
test split is reported; NiN is far from converged here (97.2 % after a full epoch).
Expected CPU time (estimated from the README's 524 images/s, not yet measured): ~5-6 min,
~55 s a run.
"""

from cnnjax.sweeps.spec import Sweep


def get_sweep() -> Sweep:
    return Sweep(
        experiment="mnist_nin",
        axes={"model.kwargs.head": ["gap", "dense"]},
        seeds=3,
        metrics=("final_test_accuracy", "final_test_loss"),
        baseline="gap",
        overrides={
            "dataset.train_split": "train[:20000]",
            "total_epochs": 1,
            "schedule.warmup_epochs": 0.25,
        },
    )
