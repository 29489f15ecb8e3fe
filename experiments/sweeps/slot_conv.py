"""The conv in the same slot: standard vs depthwise-separable vs spatially separable vs
dilated vs deformable, on the slot CNN (MNIST); accuracy against params and FLOPs.

``model.kwargs.conv`` of ``slot_cnn``: the two 3x3 convs on the 7x7 maps (conv3, conv4)
are a ``Conv`` (11,914 params in all), a ``SeparableConv`` (6,202), a
``SpatiallySeparableConv`` 3x1 then 1x3 (8,842), a ``Conv`` with dilation 2 (11,914, a
5x5 window) or a ``DeformableConv`` v2 (23,632: its offset/mask convs). The rest of the
network and the seeds' init streams and data order are shared.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --sweep slot_conv

Size: 5 points x 3 seeds = 15 runs.
Schedule: mnist_slot_cnn's recipe on the first 30,000 training images for 2 epochs (0.5
of warm-up), so the 15 runs fit the 2-core CPU; the full test split is reported. Short
runs favour the layers that learn fastest, not necessarily the best at convergence.
Expected CPU time (estimated from the README's images/s of the deformable twins, not yet
measured): ~7 min; ~25 s a run for the four plain kinds (~4,000 images/s), ~45 s for
the deformable one (~1,700 images/s).
"""

from cnnjax.sweeps.spec import Sweep


def get_sweep() -> Sweep:
    return Sweep(
        experiment="mnist_slot_cnn",
        axes={
            "model.kwargs.conv": [
                "standard",
                "depthwise_separable",
                "spatially_separable",
                "dilated",
                "deformable",
            ]
        },
        seeds=3,
        metrics=("final_test_accuracy", "final_test_loss"),
        baseline="standard",
        overrides={
            "dataset.train_split": "train[:30000]",
            "total_epochs": 2,
            "schedule.warmup_epochs": 0.5,
        },
    )
