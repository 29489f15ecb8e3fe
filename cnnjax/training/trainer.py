"""``train_and_evaluate(config, workdir)``: the one training loop, read top to bottom.

Stages: config -> data -> model -> optimizer and steps -> init -> restore -> loop (train,
evaluate, log, checkpoint) -> summary. Every output lands in ``workdir``:

- ``config.json`` (the resolved config), ``metrics.jsonl``, ``tensorboard/``,
  ``checkpoints/``, ``learning_curves.png``, ``summary.json`` (when training finishes),
  and for reconstruction ``reconstructions.png`` (test inputs above their reconstructions).

Resume happens in this order (see :mod:`cnnjax.training.checkpoint` for the protocol):
(1) everything is built exactly as for a fresh run, including the abstract train state
(shapes and shardings, no memory); (2) if ``checkpoints/`` holds a checkpoint, the latest
is restored into that abstract state, otherwise the state is initialised from the seed;
(3) metric records after the restored step are dropped (they will be recomputed
identically); (4) the loop starts at the restored step: its epoch fixes the data order,
its position in the epoch the next batch, and the restored running sums continue the
epoch's train metrics.
"""

from __future__ import annotations

import functools
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tqdm import tqdm

import cnnjax
from cnnjax import models
from cnnjax.analysis.summary import format_table, layer_rows
from cnnjax.training import augment as augment_lib
from cnnjax.training import data as data_lib
from cnnjax.training import feed as feed_lib
from cnnjax.training import optim
from cnnjax.training import tasks as tasks_lib
from cnnjax.training.checkpoint import Checkpoints
from cnnjax.training.config import ConfigError, steps, validate
from cnnjax.training.metrics import MetricsLog, plot_learning_curves, summarize, write_json
from cnnjax.training.signals import StopRequest
from cnnjax.training.step import (
    Preprocess,
    TrainState,
    init_state,
    make_eval_chunk,
    make_train_chunk,
    make_train_step,
    zero_sums,
)

# Seconds between refreshes of the progress bar's loss/accuracy (each reads the device).
_PROGRESS_REFRESH_SECONDS = 0.5

# Independent random streams, each ``fold_in(key(seed), stream)``.
_INIT_STREAM, _DATA_STREAM, _STEP_STREAM = 0, 1, 2


class Interrupted(Exception):  # noqa: N818 -- a request, not an error
    """Training stopped early (signal or ``stop_at_step``) after saving a checkpoint."""

    def __init__(self, step: int, signum: int | None):
        self.step = step
        self.signum = signum
        super().__init__(f"stopped at step {step} after saving a checkpoint")


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str | Path, *, stop_at_step: int | None = None
) -> dict[str, Any]:
    """Trains and evaluates ``config`` in ``workdir``, resuming from its latest checkpoint.

    Args:
      config: a resolved experiment config (see ``experiments/``).
      workdir: the run's directory; created if missing.
      stop_at_step: stop as if preempted once this many steps are done (checkpoint saved,
        :class:`Interrupted` raised); for splitting a run, and for tests.

    Returns:
      The summary (also written to ``workdir/summary.json``).

    Raises:
      ConfigError: a bad config, before anything slow happens.
      Interrupted: SIGTERM/SIGINT or ``stop_at_step`` stopped training; the checkpoint
        is on disk and relaunching resumes.
    """
    # ------------------------------------------------------------------ config
    validate(config, models=models.available())
    workdir = Path(workdir)
    config_dict = json.loads(config.to_json_best_effort())
    print(f"Experiment {config.experiment!r}, work directory {workdir}\n{config}", flush=True)

    task = tasks_lib.make_task(config)

    # ------------------------------------------------------------------ data
    dataset = augment_lib.distort_test(data_lib.load(config.dataset), config)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    batch_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    _check_divisible(config, mesh.size)
    resident = feed_lib.is_resident(
        dataset,
        placement=config.dataset.placement,
        max_device_bytes=config.dataset.max_device_bytes,
    )
    train_feed = feed_lib.TrainFeed(
        dataset.train, mesh, batch_size=config.batch_size, resident=resident
    )
    eval_feed = feed_lib.EvalFeed(
        dataset.test, mesh, eval_batch_size=config.eval_batch_size, resident=resident
    )
    steps_per_epoch = train_feed.steps_per_epoch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size={config.batch_size} exceeds the {len(dataset.train)} training examples"
        )
    durations = dict(steps_per_epoch=steps_per_epoch, batch_size=config.batch_size)
    total_steps = steps("total", config, **durations)
    warmup_steps = steps("warmup", config.schedule, **durations, default=0)
    num_epochs = -(-total_steps // steps_per_epoch)
    print(
        f"Data: {dataset.name}, {len(dataset.train):,} train / {len(dataset.test):,} test "
        f"images {dataset.train.images.shape[1:]}, {dataset.num_classes} classes, "
        f"{'on the device' if resident else 'streamed from host memory'}; "
        f"{mesh.size} {jax.default_backend()} device(s); {total_steps:,} steps "
        f"= {num_epochs} epoch(s) of {steps_per_epoch:,}",
        flush=True,
    )

    # ------------------------------------------------------------------ model
    model = models.get(config.model.name, **config.model.kwargs.to_dict())
    preprocess = Preprocess(config.dataset.mean, config.dataset.std, config.dataset.pad)
    augment = augment_lib.make_augment(config)
    input_shape = jax.eval_shape(
        functools.partial(preprocess.augmented, augment, jax.random.key(0)),
        dataset.train.images[:1],
    ).shape
    rows = layer_rows(model, input_shape)
    print(f"Model {config.model.name!r}:\n{format_table(rows)}", flush=True)
    _check_outputs(model, task, input_shape, dataset.num_classes)

    # ------------------------------------------------------------------ optimizer, steps
    schedule = optim.make_schedule(config, total_steps=total_steps, warmup_steps=warmup_steps)
    lr_at = jax.jit(schedule)  # one compilation instead of one per op when logging the lr
    tx = optim.make_optimizer(config, schedule)
    root = jax.random.key(config.seed)
    init_key, data_key, step_key = (
        jax.random.fold_in(root, s) for s in (_INIT_STREAM, _DATA_STREAM, _STEP_STREAM)
    )
    train_step = make_train_step(
        model,
        tx,
        task=task,
        preprocess=preprocess,
        augment=augment,
        step_key=step_key,
        microbatches=config.microbatches,
    )
    train_chunk = make_train_chunk(
        train_step, batch_size=config.batch_size, batch_sharding=batch_sharding
    )
    eval_chunk = make_eval_chunk(
        model,
        task=task,
        preprocess=preprocess,
        eval_batch_size=config.eval_batch_size,
        batch_sharding=batch_sharding,
    )

    # ------------------------------------------------------------------ init (shapes first)
    def fresh_state(key: jax.Array) -> TrainState:
        return init_state(model, tx, key, jnp.zeros(input_shape, jnp.float32))

    abstract = jax.eval_shape(fresh_state, init_key)
    shardings = jax.tree.map(lambda _: replicated, abstract)
    abstract = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings
    )

    # ------------------------------------------------------------------ restore
    # The config is sound (every check above passed): from here on the work directory
    # is written.
    workdir.mkdir(parents=True, exist_ok=True)
    write_json(workdir / "config.json", config_dict)
    checkpoints = Checkpoints(
        workdir / "checkpoints",
        keep=config.checkpoint.keep,
        keep_best=config.checkpoint.keep_best,
        async_save=config.checkpoint.async_save,
    )
    log = MetricsLog(workdir, metric=task.metric)
    metric = task.metric
    start_step = checkpoints.latest_step()
    if start_step is None:
        state = jax.jit(fresh_state, out_shardings=shardings)(init_key)
        start_step, elapsed_before = 0, 0.0
    else:
        state, meta = checkpoints.restore(abstract, start_step)
        elapsed_before = meta["elapsed_seconds"]
        _warn_config_changes(meta["config"], config_dict)
        print(
            f"Resumed from checkpoint at step {start_step:,} (epoch "
            f"{meta['epochs_done'] + 1}, step {meta['step_in_epoch']} of {steps_per_epoch})",
            flush=True,
        )
    records = log.truncate(start_step)
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    reset_sums = jax.jit(zero_sums, out_shardings=jax.tree.map(lambda _: replicated, abstract.sums))

    def meta_for(step: int, elapsed: float) -> dict[str, Any]:
        return {
            "epochs_done": step // steps_per_epoch,
            "step_in_epoch": step % steps_per_epoch,
            "elapsed_seconds": elapsed,
            "config": config_dict,
            "versions": _versions(),
        }

    # ------------------------------------------------------------------ loop
    step = start_step
    clock = _Clock(elapsed_before)
    compiled: set[int] = set()  # chunk lengths whose train call is compiled already
    try:
        with StopRequest() as stop:
            while step < total_steps:
                epoch = step // steps_per_epoch
                epoch_start = epoch * steps_per_epoch
                epoch_end = min(epoch_start + steps_per_epoch, total_steps)
                train_feed.start_epoch(data_key, epoch)
                if step == epoch_start:  # a new epoch, not one resumed midway
                    state = state.replace(sums=reset_sums())
                t_epoch = time.perf_counter()
                progress = _EpochProgress(
                    f"epoch {epoch + 1}/{num_epochs}",
                    total=epoch_end - epoch_start,
                    done=step - epoch_start,
                    batch_size=config.batch_size,
                    compiled=compiled,
                    task=task,
                )
                # -------------------------------------------------------- train
                while step < epoch_end:
                    n = min(config.steps_per_call, epoch_end - step)
                    if stop_at_step is not None and stop_at_step > step:
                        n = min(n, stop_at_step - step)
                    args = train_feed.chunk(step - epoch_start, n)
                    state = progress.call(train_chunk, state, *args, num_steps=n)
                    step += n
                    if stop.requested or (stop_at_step is not None and step >= stop_at_step):
                        progress.finish()
                        checkpoints.save(
                            state, step=step, meta=meta_for(step, clock()), test_metric=None
                        )
                        raise Interrupted(step, stop.signum)
                train_sums = jax.device_get(state.sums)  # waits for the epoch's last step
                steady_images, steady_seconds = progress.finish()
                # -------------------------------------------------------- evaluate
                test_sums = _evaluate(eval_chunk, state, eval_feed)
                # -------------------------------------------------------- log
                record = {
                    "epoch": epoch + 1,
                    "step": step,
                    "lr": float(lr_at(step - 1)),
                    "train_loss": float(train_sums["loss"] / train_sums["count"]),
                    f"train_{metric}": float(train_sums["metric"] / train_sums["count"]),
                    "test_loss": float(test_sums["loss"] / test_sums["count"]),
                    f"test_{metric}": float(test_sums["metric"] / test_sums["count"]),
                    "elapsed_seconds": clock(),
                    "epoch_seconds": time.perf_counter() - t_epoch,
                    "steady_images": steady_images,
                    "steady_seconds": steady_seconds,
                }
                records.append(record)
                log.append(record)
                print(_epoch_line(record, num_epochs, task), flush=True)
                # -------------------------------------------------------- checkpoint
                if (epoch + 1) % config.checkpoint.every_epochs == 0 or step == total_steps:
                    checkpoints.save(
                        state,
                        step=step,
                        meta=meta_for(step, record["elapsed_seconds"]),
                        test_metric=record[f"test_{metric}"],
                    )
    finally:
        # Whatever happened, finish writing what was started: pending checkpoint writes,
        # event files, and the plot of the epochs done so far.
        checkpoints.close()
        log.close()
        if records:
            plot_learning_curves(
                records,
                workdir / "learning_curves.png",
                metric=metric,
                loss_name=task.loss_name,
            )
    if isinstance(task, tasks_lib.Reconstruction):
        _save_reconstructions(model, state, preprocess, dataset.test.images[:8], workdir)

    # ------------------------------------------------------------------ summary
    summary = summarize(
        records,
        experiment=config.experiment,
        params=num_params,
        metric=metric,
        target=tasks_lib.target(config, task),
    )
    summary["workdir"] = str(workdir)
    summary["devices"] = [str(d) for d in jax.devices()]
    write_json(workdir / "summary.json", summary)
    print(_final_report(summary, workdir, task), flush=True)
    return summary


class _Clock:
    """Wall seconds since construction plus ``offset`` (time spent by earlier processes)."""

    def __init__(self, offset: float):
        self._offset = offset
        self._start = time.perf_counter()

    def __call__(self) -> float:
        return self._offset + time.perf_counter() - self._start


class _EpochProgress:
    """An epoch's progress bar, and its steady-state speed: images per second of train
    calls, leaving out each call that compiles (the first of every chunk length in the
    process), which is timed apart, between two waits for the device.

    Args:
      desc: the bar's label.
      total, done: steps in the epoch, and already done (when resuming midway).
      batch_size: images per step.
      compiled: chunk lengths already compiled in this process; updated in place.
    """

    def __init__(
        self,
        desc: str,
        *,
        total: int,
        done: int,
        batch_size: int,
        compiled: set[int],
        task: tasks_lib.Task,
    ):
        self._bar = tqdm(
            total=total,
            initial=done,
            desc=desc,
            unit="step",
            leave=False,
            disable=None,  # no bar when stdout is not a terminal (logs, CI)
            dynamic_ncols=True,
        )
        self._batch_size = batch_size
        self._compiled = compiled
        self._task = task
        self._start = self._refreshed = time.perf_counter()
        self._steady_steps = 0
        self._compile_seconds = 0.0

    def call(self, train_chunk, state: TrainState, *args, num_steps: int) -> TrainState:
        """``train_chunk(state, *args, num_steps=num_steps)``, timed."""
        if num_steps in self._compiled:
            state = train_chunk(state, *args, num_steps=num_steps)
            self._steady_steps += num_steps
        else:
            jax.block_until_ready(state)  # so that earlier calls are not counted here
            t0 = time.perf_counter()
            state = jax.block_until_ready(train_chunk(state, *args, num_steps=num_steps))
            self._compile_seconds += time.perf_counter() - t0
            self._compiled.add(num_steps)
        self._bar.update(num_steps)
        now = time.perf_counter()
        if not self._bar.disable and now - self._refreshed > _PROGRESS_REFRESH_SECONDS:
            self._refreshed = now
            self._bar.set_postfix_str(_train_postfix(state.sums, self._task, *self.steady()))
        return state

    def steady(self) -> tuple[int, float]:
        """(images, seconds) of the train calls so far that did not compile."""
        seconds = time.perf_counter() - self._start - self._compile_seconds
        return self._steady_steps * self._batch_size, max(seconds, 0.0)

    def finish(self) -> tuple[int, float]:
        """Closes the bar; returns :meth:`steady` (call after waiting for the device)."""
        self._bar.close()
        return self.steady()


def _check_divisible(config: ml_collections.ConfigDict, num_devices: int) -> None:
    for name, parts in (("batch_size", num_devices * config.microbatches),
                        ("eval_batch_size", num_devices)):  # fmt: skip
        if config[name] % parts:
            raise ConfigError(
                f"{name}={config[name]} must be a multiple of the number of devices "
                f"({num_devices}){' times microbatches' if parts != num_devices else ''}: "
                "each batch is split evenly over them"
            )


def _check_outputs(
    model: flax.linen.Module, task: tasks_lib.Task, input_shape: tuple[int, ...], classes: int
) -> None:
    def apply(x):
        variables = model.init(jax.random.key(0), x, train=False)
        return model.apply(variables, x, train=False)

    out = jax.eval_shape(apply, jax.ShapeDtypeStruct(input_shape, jnp.float32))
    task.check_outputs(out.shape, input_shape, classes)


def _save_reconstructions(
    model: flax.linen.Module,
    state: TrainState,
    preprocess: Preprocess,
    images: np.ndarray,
    workdir: Path,
) -> None:
    """``reconstructions.png``: ``images`` (uint8) above the model's reconstructions."""
    x = preprocess(jnp.asarray(images))
    out = model.apply(state.variables(), x, train=False)
    inputs, outputs = (np.asarray(y) * preprocess.std + preprocess.mean for y in (x, out))
    tasks_lib.save_reconstructions(inputs, outputs, workdir / "reconstructions.png")


def _evaluate(eval_chunk, state: TrainState, eval_feed: feed_lib.EvalFeed) -> dict[str, Any]:
    """Loss/correct/count sums over the whole test split."""
    total = {"loss": 0.0, "metric": 0.0, "count": 0}
    for images, labels, num_valid in eval_feed.chunks():
        sums = jax.device_get(eval_chunk(state, images, labels, num_valid))
        total = {k: total[k] + sums[k].item() for k in total}
    return total


def _train_postfix(
    sums: dict[str, jax.Array], task: tasks_lib.Task, images: int, seconds: float
) -> str:
    sums = jax.device_get(sums)
    count = max(int(sums["count"]), 1)
    speed = f", {images / seconds:,.0f} img/s" if seconds > 0 and images else ""
    return (
        f"loss {sums['loss'] / count:.4f}, {task.metric} "
        f"{task.format(sums['metric'] / count)}{speed}"
    )


def _epoch_line(r: dict[str, Any], num_epochs: int, task: tasks_lib.Task) -> str:
    speed = r["steady_images"] / r["steady_seconds"] if r["steady_seconds"] > 0 else 0.0
    m = task.metric
    return (
        f"epoch {r['epoch']:>3}/{num_epochs}  step {r['step']:>7,}  lr {r['lr']:.2e}  "
        f"train loss {r['train_loss']:.4f} {m} {task.format(r[f'train_{m}'])}  "
        f"test loss {r['test_loss']:.4f} {m} {task.format(r[f'test_{m}'])}  "
        f"{speed:,.0f} img/s  {r['elapsed_seconds']:.1f}s"
    )


def _final_report(s: dict[str, Any], workdir: Path, task: tasks_lib.Task) -> str:
    m = task.metric
    to_target = (
        f"{s['seconds_to_target']:.1f}s" if s["seconds_to_target"] is not None else "not reached"
    )
    target = s[f"target_{m}"]
    speed = s["train_images_per_second"]
    extra = ", reconstructions.png" if isinstance(task, tasks_lib.Reconstruction) else ""
    lines = [
        f"Final test {m} {task.format(s[f'final_test_{m}'])} "
        f"(best {task.format(s[f'best_test_{m}'])} at epoch {s['best_epoch']})"
        if s[f"final_test_{m}"] is not None
        else "No epoch finished.",
        f"Trained {s['steps']:,} steps in {s['train_seconds']:.1f}s"
        + (f", {speed:,.0f} img/s steady state" if speed else "")
        + (f"; time to test {m} {task.format(target)}: {to_target}" if target else "")
        + ".",
        f"Outputs in {workdir}/: config.json, metrics.jsonl, summary.json, "
        f"learning_curves.png{extra}, tensorboard/, checkpoints/",
    ]
    return "\n".join(lines)


def _warn_config_changes(saved: dict[str, Any], current: dict[str, Any]) -> None:
    changed = sorted(
        k
        for k in set(_flatten(saved)) | set(_flatten(current))
        if _flatten(saved).get(k) != _flatten(current).get(k)
    )
    if changed:
        print(
            "Warning: resuming with a config that differs from the checkpoint's in: "
            + ", ".join(changed),
            file=sys.stderr,
            flush=True,
        )


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@functools.cache
def _versions() -> dict[str, str]:
    return {
        "cnnjax": cnnjax.__version__,
        "jax": jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "orbax-checkpoint": ocp.__version__,
        "python": platform.python_version(),
    }
