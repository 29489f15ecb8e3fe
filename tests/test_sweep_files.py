"""The sweep files in experiments/sweeps/: every (point, seed) builds and validates, each
documents how to run it, and every point that is not an existing experiment trains two
steps on generated data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from zoo_helpers import (
    TINY_RUN,
    rbg_keys,  # noqa: F401  (a fixture, used by name)
)

from cnnjax.sweeps.spec import available_sweeps, load_sweep, run_config
from cnnjax.training import train_and_evaluate

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SWEEPS = EXPERIMENTS / "sweeps"
NAMES = available_sweeps(SWEEPS)

# The first ablation suite (issue 9).
SUITE = {"pooling", "padding", "slot_conv", "inception_block", "nin_head", "dropout",
         "lenet_versions"}  # fmt: skip


def test_the_suite_is_there():
    assert set(NAMES) >= SUITE


@pytest.mark.parametrize("name", NAMES)
def test_every_point_and_seed_builds(name):
    sweep = load_sweep(name, SWEEPS)
    seeds = sweep.seed_list()
    assert len(seeds) >= 3
    points = sweep.point_values()
    assert sweep.baseline_label() in points
    for point in points:
        for seed in seeds:
            config = run_config(sweep, point, seed, experiments_dir=EXPERIMENTS)
            assert config.seed == seed


@pytest.mark.parametrize("name", sorted(SUITE))
def test_the_suite_documents_its_command_size_and_time(name):
    sweep = load_sweep(name, SWEEPS)
    source = (SWEEPS / f"{name}.py").read_text()
    assert f"python launch.py --sweep {name}" in source
    size = f"{len(sweep.point_values())} points x {len(sweep.seed_list())} seeds"
    assert size in source
    assert "Expected CPU time" in source and "Schedule:" in source


# Per base experiment, overrides that make its model tiny without changing its kind.
TINY_MODELS = {
    "mnist_lenet": [],
    "mnist_slot_cnn": [
        "--config.model.kwargs.features=(4, 4)",
        "--config.model.kwargs.slot_features=(4,)",
    ],
    "mnist_inception": [
        "--config.model.kwargs.stem_features=4",
        "--config.model.kwargs.stages=(((2, 2, 2, 2, 2, 2),),)",
    ],
    "mnist_nin": ["--config.model.kwargs.blocks=((3, 4), (3, 4))"],
    "mnist_tf_tutorial_cnn": [],
}

# Every point but the baseline (the baseline is the base experiment, or slot_cnn's
# standard convs: both trained in tests/test_model_zoo.py).
NEW_POINTS = [
    (name, point)
    for name in sorted(SUITE)
    for point in load_sweep(name, SWEEPS).point_values()
    if point != load_sweep(name, SWEEPS).baseline_label()
]


@pytest.mark.usefixtures("rbg_keys")
@pytest.mark.parametrize(("name", "point"), NEW_POINTS, ids=[f"{n}-{p}" for n, p in NEW_POINTS])
def test_new_point_trains_two_steps_on_generated_data(name, point, tmp_path):
    sweep = load_sweep(name, SWEEPS)
    overrides = [
        *TINY_RUN,
        *TINY_MODELS[sweep.experiment],
        "--config.dataset.train_split=train",  # mock data knows whole splits only
        f"--config.dataset.cache_dir={tmp_path / 'cache'}",
    ]
    config = run_config(sweep, point, 0, experiments_dir=EXPERIMENTS, overrides=overrides)
    with tfds.testing.mock_data(num_examples=8):
        summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["steps"] == 2 and summary["params"] > 0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    (record,) = [json.loads(line) for line in lines]
    assert math.isfinite(record["train_loss"]) and np.isfinite(record["test_loss"])
