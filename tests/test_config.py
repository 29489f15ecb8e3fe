"""Experiment configs: loading by name, overrides, validation, durations."""

import re
from pathlib import Path

import ml_collections
import pytest

from cnnjax import models
from cnnjax.training import config as config_lib
from cnnjax.training.config import ConfigError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def mnist() -> ml_collections.ConfigDict:
    return config_lib.load_experiment("mnist_lenet", EXPERIMENTS)


def test_lists_the_experiments():
    names = config_lib.available_experiments(EXPERIMENTS)
    assert {"mnist_lenet", "digits_lenet"} <= set(names)
    assert names == sorted(names)


@pytest.mark.parametrize("name", config_lib.available_experiments(EXPERIMENTS))
def test_every_experiment_loads_validates_and_documents_how_to_run_it(name):
    config = config_lib.load_experiment(name, EXPERIMENTS)
    config_lib.validate(config, models=models.available())
    assert config.experiment == name
    doc = config_lib.experiment_description(name, EXPERIMENTS)
    assert doc  # a one-line description for --list
    source = (EXPERIMENTS / f"{name}.py").read_text()
    assert f"python launch.py --exp {name}" in source  # the exact command
    assert "Expected" in source


def test_unknown_experiment_lists_them_and_suggests_the_closest():
    with pytest.raises(ConfigError) as e:
        config_lib.load_experiment("mnist_lenett", EXPERIMENTS)
    message = str(e.value)
    assert "unknown experiment 'mnist_lenett'" in message
    assert "Did you mean 'mnist_lenet'" in message
    assert "digits_lenet" in message  # the list of what exists


def test_loaded_config_is_locked_against_new_fields():
    config = mnist()
    with pytest.raises(AttributeError):
        config.batchsize = 3


def test_overrides_nested_fields_with_their_types():
    config = mnist()
    config_lib.apply_overrides(
        config,
        [
            "--config.optimizer.base_lr=1e-2",
            "--config.total_epochs=3",
            "--config.checkpoint.async_save=false",
            "--config.dataset.name=fashion_mnist",
            "--config.optimizer.weight_decay=1",  # an int is a fine float
        ],
    )
    assert config.optimizer.base_lr == 0.01
    assert config.total_epochs == 3
    assert config.checkpoint.async_save is False
    assert config.dataset.name == "fashion_mnist"
    assert config.optimizer.weight_decay == 1.0 and isinstance(config.optimizer.weight_decay, float)


def test_string_fields_take_the_text_verbatim():
    config = mnist()
    config_lib.apply_overrides(config, ["--config.dataset.data_dir=/tmp/1e-3"])
    assert config.dataset.data_dir == "/tmp/1e-3"


def test_derived_learning_rate_follows_an_overridden_batch_size():
    config = mnist()
    lr = config.optimizer.lr
    assert lr == pytest.approx(
        config.optimizer.base_lr * config.batch_size / config.optimizer.base_batch_size
    )
    config_lib.apply_overrides(config, [f"--config.batch_size={2 * config.batch_size}"])
    assert config.optimizer.lr == pytest.approx(2 * lr)


def test_none_switches_the_duration_unit():
    config = mnist()
    config_lib.apply_overrides(config, ["--config.total_epochs=None", "--config.total_steps=7"])
    assert config.total_epochs is None and config.total_steps == 7
    config_lib.validate(config, models=models.available())


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--config.total_epochs=1.5", "holds an int"),
        ("--config.total_epochs=ten", "holds an int"),
        ("--config.optimizer.base_lr=fast", "holds a float"),
        ("--config.checkpoint.keep_best=maybe", "holds a bool"),
    ],
)
def test_wrong_type_is_a_clear_error(arg, expected):
    with pytest.raises(ConfigError) as e:
        config_lib.apply_overrides(mnist(), [arg])
    assert expected in str(e.value)
    assert arg.split("=")[0] in str(e.value)


def test_unknown_field_suggests_the_closest():
    with pytest.raises(ConfigError) as e:
        config_lib.apply_overrides(mnist(), ["--config.optimizer.lrr=0.1"])
    assert "unknown config field 'optimizer.lrr'" in str(e.value)
    assert "'optimizer.lr'" in str(e.value)


def test_a_group_is_not_a_field():
    with pytest.raises(ConfigError, match="group of fields"):
        config_lib.apply_overrides(mnist(), ["--config.optimizer=adam"])


@pytest.mark.parametrize("arg", ["--config.batch_size", "--batch_size=3", "stray"])
def test_malformed_override(arg):
    with pytest.raises(ConfigError, match="--config.FIELD=VALUE"):
        config_lib.apply_overrides(mnist(), [arg])


def test_an_unknown_augment_field_is_refused_not_dropped():
    config = mnist()
    with config.unlocked():
        config.augment.max_shfit = 3  # as an experiment file could misspell it
    with pytest.raises(ConfigError, match=r"augment.max_shfit .* Did you mean 'max_shift'"):
        config_lib.validate(config, models=models.available())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["--config.total_steps=5"], "exactly one of total_steps, total_epochs"),
        (["--config.total_epochs=None"], "exactly one of"),
        (["--config.optimizer.name=adamm"], "Did you mean 'adam'"),
        (["--config.schedule.name=cosin"], "Did you mean 'cosine'"),
        (["--config.model.name=lenet"], "model.name='lenet'"),
        (["--config.batch_size=0"], "batch_size must be a positive int"),
        (["--config.dataset.name=None"], "dataset.name must be set"),
        (["--config.optimizer.base_lr=1e999"], "optimizer.base_lr must be a finite number"),
        (
            ["--config.optimizer.base_lr=-1"],
            "optimizer.base_lr must be a finite number in (0, inf)",
        ),
        (["--config.optimizer.base_batch_size=0"], "base_batch_size must be a positive int"),
        (["--config.label_smoothing=2.0"], "label_smoothing must be a finite number in [0, 1)"),
        (["--config.label_smoothing=1.0"], "label_smoothing must be a finite number in [0, 1)"),
        (["--config.optimizer.b2=1.0"], "optimizer.b2 must be a finite number in [0, 1)"),
        (
            ["--config.optimizer.momentum=1.5"],
            "optimizer.momentum must be a finite number in [0, 1]",
        ),
        (["--config.optimizer.weight_decay=-0.1"], "weight_decay must be a finite number"),
        (["--config.dataset.std=0"], "dataset.std must be a finite number in (0, inf)"),
        (["--config.dataset.mean=-1e999"], "dataset.mean must be a finite number"),
        (["--config.schedule.final_lr_fraction=2"], "final_lr_fraction must be a finite number"),
        (["--config.on_nonfinite=ignore"], "on_nonfinite='ignore' is not one of skip_step, stop"),
    ],
)
def test_validation_errors(overrides, message):
    config = mnist()
    config_lib.apply_overrides(config, overrides)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_lib.validate(config, models=models.available())


def _durations(**fields) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {f"total_{u}": fields.get(u) for u in ("steps", "epochs", "examples")}
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"steps": 17}, 17),
        ({"epochs": 3}, 3 * 46),  # epochs are whole epochs of full batches
        ({"epochs": 0.5}, 23),
        ({"examples": 1000}, 8),  # ceil(1000 / 128)
    ],
)
def test_durations_are_resolved_in_steps(fields, expected):
    steps = config_lib.steps("total", _durations(**fields), steps_per_epoch=46, batch_size=128)
    assert steps == expected


def test_durations_default_and_conflicts():
    assert config_lib.steps("total", _durations(), steps_per_epoch=5, batch_size=2, default=0) == 0
    with pytest.raises(ConfigError, match="one of total_steps"):
        config_lib.steps("total", _durations(), steps_per_epoch=5, batch_size=2)
    with pytest.raises(ConfigError, match="at most one"):
        config_lib.steps("total", _durations(steps=1, epochs=1), steps_per_epoch=5, batch_size=2)
