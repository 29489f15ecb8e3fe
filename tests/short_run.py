"""The short ``digits_lenet`` run that the trainer's tests share: 30 steps of batch 64 on
scikit-learn's digits (22 steps per epoch, so the run ends mid-epoch 2)."""

from pathlib import Path

import ml_collections

from cnnjax.training import apply_overrides, load_experiment

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
SHORT_RUN = ("--config.batch_size=64", "--config.total_epochs=None", "--config.total_steps=30")


def digits_config(*overrides: str) -> ml_collections.ConfigDict:
    """``digits_lenet``'s config with ``--config.FIELD=VALUE`` ``overrides`` applied."""
    config = load_experiment("digits_lenet", EXPERIMENTS)
    apply_overrides(config, list(overrides))
    return config
