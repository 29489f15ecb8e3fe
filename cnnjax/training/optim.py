"""Optimizer and learning-rate schedule, built from the config through optax.

Config fields read here (all under ``config.optimizer`` / ``config.schedule``):

- ``optimizer.name``: ``adam`` (weight decay added to the gradient, i.e. L2), ``adamw``
  (decoupled weight decay) or ``sgd`` (heavy-ball or Nesterov momentum, L2 weight decay);
  ``lr`` (peak learning rate), ``b1``, ``b2``, ``eps`` (Adam), ``momentum``, ``nesterov``
  (SGD), ``weight_decay`` (applied to kernels only: arrays of rank >= 2, not biases or
  scales). Fields another optimizer uses are ignored.
- ``schedule.name``: ``constant``; ``warmup`` (linear warm-up, then constant); ``cosine``
  (optional linear warm-up, then cosine decay); ``onecycle`` (cosine ramp up over the
  warm-up, cosine down to the end, as ``torch.optim.lr_scheduler.OneCycleLR``).
  ``warmup_steps|_epochs|_examples`` (at most one), ``init_lr_fraction`` (learning rate at
  step 0 as a fraction of ``lr``), ``final_lr_fraction`` (at the last step).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
import optax

from cnnjax.training.errors import ConfigError

Schedule = Callable[[jax.Array], jax.Array]


def _constant(lr: float, total: int, warmup: int, init: float, final: float) -> Schedule:
    del total, warmup, init, final
    return optax.constant_schedule(lr)


def _warmup(lr: float, total: int, warmup: int, init: float, final: float) -> Schedule:
    del total, final
    return optax.join_schedules(
        [optax.linear_schedule(init * lr, lr, warmup), optax.constant_schedule(lr)], [warmup]
    )


def _cosine(lr: float, total: int, warmup: int, init: float, final: float) -> Schedule:
    return optax.warmup_cosine_decay_schedule(init * lr, lr, warmup, total, final * lr)


def _onecycle(lr: float, total: int, warmup: int, init: float, final: float) -> Schedule:
    if not warmup or not init or not final:
        raise ConfigError(
            "schedule 'onecycle' needs a warm-up (schedule.warmup_*) and positive "
            f"init_lr_fraction and final_lr_fraction; got warmup={warmup} steps, "
            f"init_lr_fraction={init}, final_lr_fraction={final}"
        )
    return optax.cosine_onecycle_schedule(
        total, lr, pct_start=warmup / total, div_factor=1 / init, final_div_factor=init / final
    )


SCHEDULES: dict[str, Callable[..., Schedule]] = {
    "constant": _constant,
    "warmup": _warmup,
    "cosine": _cosine,
    "onecycle": _onecycle,
}


def make_schedule(
    config: ml_collections.ConfigDict, *, total_steps: int, warmup_steps: int
) -> Schedule:
    """The learning rate as a function of the step, from ``config.schedule``/``optimizer.lr``."""
    s = config.schedule
    if warmup_steps and warmup_steps >= total_steps:
        raise ConfigError(
            f"the warm-up ({warmup_steps} steps) must be shorter than the run "
            f"({total_steps} steps); shorten schedule.warmup_* or lengthen total_*"
        )
    return SCHEDULES[s.name](
        config.optimizer.lr, total_steps, warmup_steps, s.init_lr_fraction, s.final_lr_fraction
    )


def _kernels_only(params: optax.Params) -> optax.Params:
    """Weight-decay mask: decay weight matrices and conv kernels, not biases or scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _adam(o: ml_collections.ConfigDict, lr: Schedule) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(o.weight_decay, _kernels_only),
        optax.scale_by_adam(o.b1, o.b2, o.eps),
        optax.scale_by_learning_rate(lr),
    )


def _adamw(o: ml_collections.ConfigDict, lr: Schedule) -> optax.GradientTransformation:
    return optax.adamw(lr, o.b1, o.b2, o.eps, weight_decay=o.weight_decay, mask=_kernels_only)


def _sgd(o: ml_collections.ConfigDict, lr: Schedule) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(o.weight_decay, _kernels_only),
        optax.sgd(lr, momentum=o.momentum or None, nesterov=o.nesterov),
    )


OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "adam": _adam,
    "adamw": _adamw,
    "sgd": _sgd,
}


def make_optimizer(
    config: ml_collections.ConfigDict, schedule: Schedule
) -> optax.GradientTransformation:
    """The optax transformation named by ``config.optimizer.name``."""
    return OPTIMIZERS[config.optimizer.name](config.optimizer, schedule)
