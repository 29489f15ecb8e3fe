"""Training: experiment configs, data, optimizer, the train loop, checkpoints, metrics.

The entry point is :func:`train_and_evaluate`; ``launch.py`` is a thin command line over it.
"""

from cnnjax.training.config import (
    apply_overrides,
    available_experiments,
    experiment_description,
    load_experiment,
    validate,
)
from cnnjax.training.errors import ConfigError, DatasetUnavailableError
from cnnjax.training.trainer import Interrupted, train_and_evaluate

__all__ = [
    "ConfigError",
    "DatasetUnavailableError",
    "Interrupted",
    "apply_overrides",
    "available_experiments",
    "experiment_description",
    "load_experiment",
    "train_and_evaluate",
    "validate",
]
