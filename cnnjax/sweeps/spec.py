"""What a sweep is: a base experiment, its points (config changes), seeds and metrics.

A sweep file ``experiments/sweeps/NAME.py`` defines ``get_sweep()`` returning a
:class:`Sweep`. Its points are either the product of ``axes`` (each a config field and its
values) or listed explicitly as ``points`` (a label and its field values). Every point is
trained once per seed; seed ``k`` sets ``config.seed = k``, which fixes the run's init
stream and data order, so the same seed in two points is a paired comparison.

A run's config is built in this order (later wins): the base experiment's
``get_config()``, the sweep's ``overrides`` (for every point, e.g. a short schedule), the
command line's ``--config.FIELD=VALUE``, the point's own values, then the seed. Every point
is built and checked (field names, value types, the model's keyword arguments) before
anything trains, so a typo fails at once.
"""

from __future__ import annotations

import ast
import dataclasses
import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ml_collections

from cnnjax import models
from cnnjax.training.config import (
    ConfigError,
    apply_overrides,
    available_experiments,
    did_you_mean,
    docstring_line,
    field_paths,
    import_file,
    load_experiment,
    named_file,
    validate,
)

# Characters a point label may keep in its directory name; others become "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")
_MODEL_KWARGS = "model.kwargs."


@dataclasses.dataclass(frozen=True)
class Sweep:
    """An ablation study over one base experiment.

    Attributes:
      experiment: the base experiment, a name in ``experiments/``.
      axes: ``{field: values}``; the points are the product of the axes, labelled by the
        value (one axis) or ``name=value`` joined by ``,`` (several; ``name`` is the
        field's last component). Exactly one of ``axes`` / ``points``.
      points: ``{label: {field: value}}``, listed explicitly (``{}`` is the base config).
      seeds: how many seeds (``0 .. seeds-1``) or the seeds themselves.
      metrics: ``summary.json`` keys to report, e.g. ``"final_test_accuracy"``.
      baseline: the label every other point is compared with (default: the first point).
      overrides: ``{field: value}`` applied to every point before the command line's.
      vmap_seeds: train a point's seeds as one vmapped program (``None``: decided by
        :func:`cnnjax.sweeps.runner.use_vmap`).
      resources: per-run resource request for the Ray executor (``num_cpus``,
        ``num_gpus``, or ``resources={"TPU": 4}``-style custom resources).
      description: one line for ``--list`` (default: the sweep file's docstring).
    """

    experiment: str
    axes: Mapping[str, Sequence[Any]] = dataclasses.field(default_factory=dict)
    points: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    seeds: int | Sequence[int] = 3
    metrics: Sequence[str] = ("final_test_accuracy",)
    baseline: str | None = None
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    vmap_seeds: bool | None = None
    resources: Mapping[str, Any] = dataclasses.field(default_factory=lambda: {"num_cpus": 1})
    description: str = ""

    def point_values(self) -> dict[str, dict[str, Any]]:
        """``{label: {field: value}}`` of every point, in order."""
        if bool(self.axes) == bool(self.points):
            raise ConfigError("a sweep sets exactly one of axes (a product) or points (a list)")
        if self.points:
            return {_label(str(k)): dict(v) for k, v in self.points.items()}
        fields = list(self.axes)
        for field in fields:
            if isinstance(self.axes[field], str) or not isinstance(self.axes[field], Sequence):
                raise ConfigError(
                    f"axis {field!r} must be a list of values, got {self.axes[field]!r}"
                )
        out = {}
        for values in itertools.product(*(self.axes[f] for f in fields)):
            if len(fields) == 1:
                label = str(values[0])
            else:
                label = ",".join(
                    f"{f.rsplit('.', 1)[-1]}={v}" for f, v in zip(fields, values, strict=True)
                )
            out[_label(label)] = dict(zip(fields, values, strict=True))
        return out

    def seed_list(self) -> list[int]:
        """The seeds, as a list of ints."""
        seeds = list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)
        if not seeds or any(not isinstance(s, int) or s < 0 for s in seeds):
            raise ConfigError(
                f"seeds must be a positive count or non-negative ints, got {self.seeds!r}"
            )
        return seeds

    def baseline_label(self) -> str:
        labels = list(self.point_values())
        baseline = labels[0] if self.baseline is None else _label(self.baseline)
        if baseline not in labels:
            raise ConfigError(
                f"baseline {self.baseline!r} is not a point.{did_you_mean(baseline, labels)} "
                f"Points: {', '.join(labels)}"
            )
        return baseline


def _label(text: str) -> str:
    return _UNSAFE.sub("_", text)


# ----------------------------------------------------------------------------- sweep files


def available_sweeps(directory: str | Path) -> list[str]:
    """Names of the sweep files in ``directory`` (``*.py`` not starting with ``_``)."""
    return available_experiments(directory)


def load_sweep(name: str, directory: str | Path) -> Sweep:
    """Imports ``directory/NAME.py`` and returns its ``get_sweep()``."""
    path = named_file("sweep", name, directory)
    sweep = import_file(path, f"cnnjax_sweep_{name}").get_sweep()
    if not isinstance(sweep, Sweep):
        raise ConfigError(f"{path}: get_sweep() must return a cnnjax.sweeps.Sweep")
    if not sweep.description:
        sweep = dataclasses.replace(sweep, description=docstring_line(path))
    return sweep


def apply_sweep_flags(sweep: Sweep, flags: Sequence[str]) -> Sweep:
    """``sweep`` changed by ``--sweep.FIELD=VALUE`` flags.

    ``--sweep.seeds=5`` (seeds 0-4) or ``--sweep.seeds=[3,4]``; ``--sweep.only=avg`` or
    ``--sweep.only=avg,max`` keeps those points (the baseline too, for comparisons);
    ``--sweep.vmap_seeds=true|false``; ``--sweep.baseline=LABEL``.
    """
    for flag in flags:
        if not flag.startswith("--sweep.") or "=" not in flag:
            raise ConfigError(f"cannot parse {flag!r}: sweep flags are --sweep.FIELD=VALUE")
        field, text = flag[len("--sweep.") :].split("=", 1)
        if field == "seeds":
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = None
            if not isinstance(value, int | list | tuple) or isinstance(value, bool):
                raise ConfigError(f"{flag}: seeds is a count (5) or a list of seeds ([0, 3])")
            sweep = dataclasses.replace(
                sweep, seeds=value if isinstance(value, int) else list(value)
            )
            sweep.seed_list()
        elif field == "only":
            sweep = _only(sweep, [_label(s.strip()) for s in text.split(",") if s.strip()])
        elif field == "vmap_seeds":
            if text.lower() not in ("true", "false", "none"):
                raise ConfigError(f"{flag}: vmap_seeds is true, false or none (automatic)")
            value = {"true": True, "false": False, "none": None}[text.lower()]
            sweep = dataclasses.replace(sweep, vmap_seeds=value)
        elif field == "baseline":
            sweep = dataclasses.replace(sweep, baseline=text)
            sweep.baseline_label()
        else:
            fields = ["seeds", "only", "vmap_seeds", "baseline"]
            raise ConfigError(
                f"unknown sweep flag {flag!r}.{did_you_mean(field, fields)} "
                f"Sweep flags: {', '.join('--sweep.' + f for f in fields)}."
            )
    return sweep


def _only(sweep: Sweep, labels: list[str]) -> Sweep:
    points = sweep.point_values()
    unknown = [label for label in labels if label not in points]
    if unknown or not labels:
        bad = unknown[0] if unknown else ""
        raise ConfigError(
            f"--sweep.only: no point {bad!r}.{did_you_mean(bad, points)} "
            f"Points: {', '.join(points)}."
        )
    baseline = sweep.baseline_label()
    keep = [label for label in points if label in labels or label == baseline]
    return dataclasses.replace(
        sweep, axes={}, points={label: points[label] for label in keep}, baseline=baseline
    )


# ----------------------------------------------------------------------------- run configs


def run_config(
    sweep: Sweep,
    point: str,
    seed: int,
    *,
    experiments_dir: str | Path,
    overrides: Sequence[str] = (),
) -> ml_collections.ConfigDict:
    """The resolved config of ``(point, seed)``; raises ConfigError naming the point.

    Args:
      sweep: the sweep.
      point: a label of :meth:`Sweep.point_values`.
      seed: the run's ``config.seed``.
      experiments_dir: where the base experiment's file is.
      overrides: the command line's ``--config.FIELD=VALUE`` arguments.
    """
    config = load_experiment(sweep.experiment, experiments_dir)
    try:
        for path, value in sweep.overrides.items():
            set_field(config, path, value)
        apply_overrides(config, overrides)
        for path, value in sweep.point_values()[point].items():
            set_field(config, path, value)
        config.seed = seed
        validate(config, models=models.available())
        models.get(config.model.name, **config.model.kwargs.to_dict())
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"sweep point {point!r}: {e}") from None
    return config


def set_field(config: ml_collections.ConfigDict, path: str, value: Any) -> None:
    """Sets the field ``path`` (dotted) of ``config`` to ``value``, type-checked.

    Fields under ``model.kwargs.`` may be new (they are the model's keyword arguments,
    checked when the model is built); any other field must exist.
    """
    *parents, key = path.split(".")
    node = config
    for part in parents:
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            node = None
            break
        node = node[part]
    if (
        isinstance(node, ml_collections.ConfigDict)
        and key not in node
        and path.startswith(_MODEL_KWARGS)
        and path.count(".") == 2
    ):
        with node.unlocked():
            node[key] = value
        return
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
        raise ConfigError(
            f"unknown config field {path!r}.{did_you_mean(path, field_paths(config))}"
        )
    if isinstance(node[key], ml_collections.ConfigDict):
        raise ConfigError(f"{path!r} is a group of fields, not a field")
    try:
        node[key] = value
    except TypeError as e:
        raise ConfigError(f"{path}={value!r}: {e}") from None
