"""Experiments by name, command-line overrides, validation and training durations.

An experiment is a file ``experiments/NAME.py`` whose ``get_config()`` returns an
``ml_collections.ConfigDict``. Overrides use the ml_collections config-flag spelling,
``--config.optimizer.lr=1e-3``, and are type-checked against the field they replace.
Every mistake (unknown experiment, unknown field, wrong type, inconsistent durations) raises
:class:`ConfigError`, whose message lists what exists and suggests the closest name.
"""

from __future__ import annotations

import ast
import importlib.util
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

import ml_collections

from cnnjax.training import augment, feed, optim, precision, sharding, step, tasks
from cnnjax.training.errors import ConfigError, did_you_mean

# Units a duration may be given in (big_vision's ``utils.steps``): ``total_epochs``,
# ``total_steps`` or ``total_examples``; exactly one of them is set.
DURATION_UNITS = ("steps", "epochs", "examples")

_TYPE_NAMES = {int: "an int", float: "a float", tuple: "a tuple", list: "a list"}
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def available_experiments(directory: str | Path) -> list[str]:
    """Names of the experiments in ``directory``: its ``*.py`` files not starting with ``_``."""
    return sorted(p.stem for p in Path(directory).glob("*.py") if not p.stem.startswith("_"))


def experiment_description(name: str, directory: str | Path) -> str:
    """The first line of ``directory/NAME.py``'s docstring (read without running it)."""
    return docstring_line(Path(directory) / f"{name}.py")


def docstring_line(path: str | Path) -> str:
    """The first line of the Python file ``path``'s docstring, or ``""``."""
    doc = ast.get_docstring(ast.parse(Path(path).read_text())) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def named_file(kind: str, name: str, directory: str | Path) -> Path:
    """``directory/NAME.py`` (an experiment or sweep: ``kind``); raises ConfigError listing
    what exists, with the closest names, when there is none."""
    names = available_experiments(directory)
    if name not in names:
        raise ConfigError(
            f"unknown {kind} {name!r}.{did_you_mean(name, names)} "
            f"{kind.capitalize()}s in {directory}: {', '.join(names) or '(none)'}."
        )
    return Path(directory) / f"{name}.py"


def import_file(path: str | Path, module_name: str) -> ModuleType:
    """Runs the Python file ``path`` as a module named ``module_name`` and returns it."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_experiment(name: str, directory: str | Path) -> ml_collections.ConfigDict:
    """Imports ``directory/NAME.py``, calls its ``get_config()`` and returns it, locked.

    The experiment's name is recorded as ``config.experiment``. Locking makes an attempt to
    set a field that does not exist an error instead of a silent new field.
    """
    path = named_file("experiment", name, directory)
    config = import_file(path, f"cnnjax_experiment_{name}").get_config()
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{path}: get_config() must return an ml_collections.ConfigDict")
    with config.unlocked():
        config.experiment = name
    config.lock()
    return config


def field_paths(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field, e.g. ``["batch_size", "optimizer.lr", ...]``."""
    paths = []
    for key in config:
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            paths.extend(field_paths(value, f"{prefix}{key}."))
        else:
            paths.append(f"{prefix}{key}")
    return paths


def apply_overrides(config: ml_collections.ConfigDict, args: Sequence[str]) -> None:
    """Applies ``--config.PATH=VALUE`` arguments to ``config`` in place.

    ``VALUE`` is parsed against the type of the field it replaces: ``true/false`` for
    booleans, integers for ``int`` fields (``1.5`` is an error), any number for ``float``
    fields, Python literals for tuples and lists, the raw text for strings, and ``None``
    for any field (e.g. ``--config.total_epochs=None`` to train by steps instead).
    """
    for arg in args:
        path, text = _split_override(arg)
        parent, key = _lookup(config, path)
        value = _parse_value(text, parent.get_type(key), path, parent[key])
        try:
            parent[key] = value
        except TypeError as e:  # ConfigDict's own type check, e.g. a tuple for a float.
            raise ConfigError(f"{arg}: {e}") from None


def _split_override(arg: str) -> tuple[str, str]:
    if not arg.startswith("--config.") or "=" not in arg:
        raise ConfigError(
            f"cannot parse {arg!r}: overrides are written --config.FIELD=VALUE, "
            "e.g. --config.optimizer.lr=1e-3"
        )
    path, text = arg[len("--config.") :].split("=", 1)
    return path, text


def _lookup(config: ml_collections.ConfigDict, path: str) -> tuple[ml_collections.ConfigDict, str]:
    """The ConfigDict holding the field ``path`` and the field's key in it."""
    *parents, key = path.split(".")
    node = config
    for i, part in enumerate([*parents, key]):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise ConfigError(
                f"unknown config field {path!r}.{did_you_mean(path, field_paths(config))} "
                f"Fields: {', '.join(field_paths(config))}."
            )
        if i < len(parents):
            node = node[part]
    if isinstance(node[key], ml_collections.ConfigDict):
        raise ConfigError(
            f"{path!r} is a group of fields, not a field: set one of "
            f"{', '.join(path + '.' + p for p in field_paths(node[key]))}"
        )
    return node, key


def _parse_value(text: str, field_type: type, path: str, current: object) -> object:
    """``text`` as a value of ``field_type``; raises ConfigError naming the field."""

    def wrong(expected: str) -> ConfigError:
        return ConfigError(
            f"--config.{path}={text}: field {path!r} holds {expected} "
            f"(currently {current!r}); {text!r} is not one"
        )

    if text == "None":
        return None
    if field_type is str or (field_type is type(None)):
        return text
    if field_type is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise wrong("a bool (true/false)")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        raise wrong(_TYPE_NAMES.get(field_type, field_type.__name__)) from None
    if field_type is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise wrong("an int")
    if field_type is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a float")
        return float(value)
    if field_type in (tuple, list):
        if not isinstance(value, tuple | list):
            raise wrong(_TYPE_NAMES[field_type])
        return field_type(value)
    return value


def validate(config: ml_collections.ConfigDict, *, models: Sequence[str]) -> None:
    """Checks names and values before anything slow happens; raises ConfigError.

    Args:
      config: a resolved experiment config.
      models: the registered model names (``cnnjax.models.available()``).
    """
    for path in ("dataset.name", "model.name"):
        if not _get(config, path):
            raise ConfigError(f"{path} must be set (by the experiment or --config.{path}=...)")
    _check_choice("model.name", config.model.name, models)
    _check_choice("task", config.task, tasks.TASKS)
    _check_choice("optimizer.name", config.optimizer.name, optim.OPTIMIZERS)
    _check_choice("schedule.name", config.schedule.name, optim.SCHEDULES)
    _check_choice("augment.name", config.augment.name, augment.AUGMENTATIONS)
    augment.check_fields(config.augment)
    _check_choice("dataset.placement", config.dataset.placement, feed.PLACEMENTS)
    _check_choice("dtype", config.dtype, precision.DTYPES)
    _check_choice("sharding.params", config.sharding.params, sharding.PARAM_SHARDINGS)
    positive = ("batch_size", "eval_batch_size", "steps_per_call", "microbatches",
                "optimizer.base_batch_size", "checkpoint.every_epochs",
                "checkpoint.keep")  # fmt: skip
    for path in positive:
        value = _get(config, path)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{path} must be a positive int, got {value!r}")
    _check_choice("on_nonfinite", config.on_nonfinite, step.ON_NONFINITE)
    for path in ("optimizer.base_lr", "optimizer.lr", "optimizer.eps", "dataset.std"):
        _check_range(config, path, low_open=True)
    for path in ("optimizer.b1", "optimizer.b2", "label_smoothing"):
        _check_range(config, path, high=1.0, high_open=True)
    for path in ("optimizer.momentum", "schedule.init_lr_fraction", "schedule.final_lr_fraction"):
        _check_range(config, path, high=1.0)
    _check_range(config, "optimizer.weight_decay")
    for path in ("checkpoint.every_steps", "checkpoint.every_minutes"):
        if _get(config, path) is not None:
            _check_range(config, path, low_open=True)
    _check_range(config, "dataset.mean", low=-math.inf)
    set_units = [u for u in DURATION_UNITS if config.get(f"total_{u}") is not None]
    if len(set_units) != 1:
        raise ConfigError(
            "set exactly one of "
            + ", ".join(f"total_{u}" for u in DURATION_UNITS)
            + f"; got {', '.join(f'total_{u}' for u in set_units) or 'none'} "
            "(e.g. --config.total_epochs=None --config.total_steps=500)"
        )


def _get(config: ml_collections.ConfigDict, path: str) -> object:
    node = config
    for part in path.split("."):
        node = node[part]
    return node


def _check_range(
    config: ml_collections.ConfigDict,
    path: str,
    *,
    low: float = 0.0,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raises ConfigError unless the field ``path`` is a finite number in the interval."""
    value = _get(config, path)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{path} must be a number, got {value!r}")
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    if not (math.isfinite(value) and above and below):
        closing = ")" if high_open or high == math.inf else "]"
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{closing}"
        raise ConfigError(f"{path} must be a finite number in {interval}, got {value!r}")


def _check_choice(path: str, value: str, choices: Iterable[str]) -> None:
    choices = sorted(choices)
    if value not in choices:
        raise ConfigError(
            f"{path}={value!r} is not one of {', '.join(choices)}.{did_you_mean(value, choices)}"
        )


def steps(
    prefix: str,
    config: ml_collections.ConfigDict,
    *,
    steps_per_epoch: int,
    batch_size: int,
    default: int | None = None,
) -> int:
    """Converts ``{prefix}_steps|_epochs|_examples`` in ``config`` into a number of steps.

    The one place durations are resolved (as big_vision's ``utils.steps``). At most one
    unit may be set; if none is, ``default`` is returned (an error when it is ``None``).
    An epoch is ``steps_per_epoch`` steps (the trainer drops the incomplete last batch), so
    whole epochs end exactly where evaluation happens; examples round up to whole steps.

    Args:
      prefix: e.g. ``"total"`` or ``"warmup"``.
      config: the ConfigDict holding the fields.
      steps_per_epoch: full batches in one pass over the training split.
      batch_size: examples per step.
    """
    given = {u: config.get(f"{prefix}_{u}") for u in DURATION_UNITS}
    given = {u: v for u, v in given.items() if v is not None}
    if len(given) > 1:
        raise ConfigError(f"set at most one of {', '.join(f'{prefix}_{u}' for u in given)}")
    if not given:
        if default is None:
            raise ConfigError(f"one of {prefix}_steps, {prefix}_epochs must be set")
        return default
    ((unit, value),) = given.items()
    if value < 0:
        raise ConfigError(f"{prefix}_{unit} must be >= 0, got {value}")
    if unit == "steps":
        return int(value)
    if unit == "epochs":
        return round(value * steps_per_epoch)
    return math.ceil(value / batch_size)
