"""Dropout 0 vs 0.5 before the output layer of the TensorFlow-tutorial CNN (MNIST).

``model.kwargs.dropout`` of ``tf_tutorial_cnn`` (3,274,634 params either way): 0.5 is
the tutorial's (and mnist_tf_tutorial_cnn's) setting, 0.0 removes it. Same init streams
and data order per seed; the seeds' dropout masks differ only where dropout is on.

Command:
  TFDS_DATA_DIR=../shared/tfds python launch.py --sweep dropout

Size: 2 points x 3 seeds = 6 runs.
Schedule: mnist_tf_tutorial_cnn's recipe on the first 10,000 training images for 3
epochs (0.75 of warm-up): at ~880 images/s on the 2-core CPU its 5 full epochs take 6
minutes a run. Several passes over a small training set are where a regulariser can show
(the dense layer's 3.2 M weights see each image three times); the full test split is
reported. Random shifts of up to 2 pixels stay on in both arms, which regularise too.
Expected CPU time (estimated from the README's 879 images/s, not yet measured): ~5-6 min,
~55 s a run.
"""

from cnnjax.sweeps.spec import Sweep


def get_sweep() -> Sweep:
    return Sweep(
        experiment="mnist_tf_tutorial_cnn",
        axes={"model.kwargs.dropout": [0.5, 0.0]},
        seeds=3,
        metrics=("final_test_accuracy", "final_test_loss"),
        baseline="0.5",
        overrides={
            "dataset.train_split": "train[:10000]",
            "total_epochs": 3,
            "schedule.warmup_epochs": 0.75,
        },
    )
