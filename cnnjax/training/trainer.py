"""``train_and_evaluate(config, workdir)``: the one training loop, read top to bottom.

Stages: config -> data -> model -> optimizer and steps -> init -> restore -> loop (train,
evaluate, log, checkpoint) -> summary. Every output lands in ``workdir``:

- ``config.json`` (the resolved config), ``metrics.jsonl``, ``tensorboard/``,
  ``checkpoints/``, ``learning_curves.png``, ``summary.json`` (when training finishes),
  and for reconstruction ``reconstructions.png`` (test inputs above their reconstructions).

Resume happens in this order (see :mod:`cnnjax.training.checkpoint` for the protocol):
(0) the work directory is locked, and a config that changes the train state's structure
or the data order of the run in it is refused, both before anything is written
(:mod:`cnnjax.training.workdir`); (1) everything is built exactly as for a fresh run,
including the abstract train state (shapes and shardings, no memory); (2) the newest
checkpoint that verifies is restored into that abstract state (damaged ones are set
aside), otherwise the state is initialised from the seed; (3) metric records after the
restored step, and that of an epoch it resumes midway, are dropped (they will be
recomputed identically); (4) the loop starts at the restored step: its epoch fixes the
data order, its position in the epoch the next batch, and the restored running sums
continue the epoch's train metrics.
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from tqdm import tqdm

import cnnjax
from cnnjax import models
from cnnjax.analysis.summary import format_table
from cnnjax.training import console, distributed, optim
from cnnjax.training import feed as feed_lib
from cnnjax.training import sharding as sharding_lib
from cnnjax.training import tasks as tasks_lib
from cnnjax.training import workdir as workdir_lib
from cnnjax.training.checkpoint import Checkpoints, SaveSchedule, restore_newest_verified
from cnnjax.training.config import steps, validate
from cnnjax.training.errors import ConfigError, DivergedError
from cnnjax.training.inputs import build_inputs, check_model
from cnnjax.training.metrics import MetricsLog, plot_learning_curves, summarize, write_json
from cnnjax.training.signals import StopRequest
from cnnjax.training.step import (
    Preprocess,
    TrainState,
    init_state,
    make_eval_chunk,
    make_train_chunk,
    make_train_step,
)

# Seconds between refreshes of the progress bar's loss/accuracy (each reads the device).
_PROGRESS_REFRESH_SECONDS = 0.5

# What the divergence guard checks (TrainState.guard), for messages.
_GUARDED = {"loss": "loss", "grad_norm": "gradient norm", "params": "parameters after the update"}

# Independent random streams, each ``fold_in(key(seed), stream)``.
_INIT_STREAM, _DATA_STREAM, _STEP_STREAM = 0, 1, 2


class Interrupted(Exception):  # noqa: N818 -- a request, not an error
    """Training stopped early (signal or ``stop_at_step``) after saving a checkpoint."""

    def __init__(self, step: int, signum: int | None):
        self.step = step
        self.signum = signum
        super().__init__(f"stopped at step {step} after saving a checkpoint")


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    stop_at_step: int | None = None,
    seeds: Sequence[int] | None = None,
    restart: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """Trains and evaluates ``config`` in ``workdir``, resuming from its newest verified
    checkpoint.

    Args:
      config: a resolved experiment config (see ``experiments/``).
      workdir: the run's directory; created if missing.
      stop_at_step: stop as if preempted once this many steps are done (checkpoint saved,
        :class:`Interrupted` raised); for splitting a run, and for tests.
      seeds: train these seeds of ``config`` together, as one ``jax.vmap``-ed program:
        the train state (params, optimizer state, batch statistics) gets a leading seed
        axis, and each seed keeps its own init key, data order and step keys, exactly as
        a run of ``config`` with ``config.seed`` set to it. Each seed writes the ordinary
        run directory :func:`seed_dir` ``(workdir, seed)`` (config, metrics,
        checkpoints, summary), so a report or a resume does not depend on how it was
        trained. ``None``: one run of ``config.seed`` in ``workdir``.
      restart: start afresh: the files of an earlier run in ``workdir`` are first moved
        to ``set_aside/run-DATE-TIME`` (never deleted).

    Returns:
      The summary (also written to ``summary.json``); with ``seeds``, one per seed.

    Raises:
      ConfigError: a bad config, before anything slow happens.
      WorkdirLockedError: another live process runs in ``workdir`` (nothing was touched).
      IncompatibleResumeError: ``workdir`` holds a run whose train state or data order
        ``config`` changes (nothing was written).
      WorkdirError: ``workdir`` cannot be created or written.
      NoVerifiedCheckpointError: ``workdir`` has checkpoints but none verifies (each was
        set aside); ``restart=True`` starts afresh.
      Interrupted: SIGTERM/SIGINT or ``stop_at_step`` stopped training; the checkpoint
        is on disk and relaunching resumes.
    """
    # ------------------------------------------------------------------ config
    validate(config, models=models.available())
    workdir = workdir_lib.as_path(workdir)
    stacked = seeds is not None
    seed_list = list(seeds) if stacked else [config.seed]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ConfigError(f"seeds must be distinct and at least one, got {seeds!r}")
    run_dirs = [seed_dir(workdir, seed) for seed in seed_list] if stacked else [workdir]
    config_dicts = [_config_dict(config, seed) for seed in seed_list]

    # ------------------------------------------------------------------ work directories
    # Locked before anything is written; an incompatible earlier run is refused (or, with
    # restart, set aside) before anything is written either.
    # A stop requested from here on is honoured after the first train call.
    # With several processes, process 0 holds the lock and moves files; the others wait.
    primary = distributed.is_primary()
    lock = workdir_lib.locked(run_dirs) if primary else contextlib.nullcontext()
    with lock, workdir_lib.write_errors(), StopRequest() as stop:
        for run_dir, config_dict in zip(run_dirs, config_dicts, strict=True):
            if not restart:
                if changes := workdir_lib.check_resumable(run_dir, config_dict):
                    _say(changes, flush=True)
            elif primary and (moved := workdir_lib.set_aside_run(run_dir)):
                _say(f"--restart: the earlier run's files are in {moved}", flush=True)
        distributed.barrier("cnnjax: work directories ready")
        return _train(
            config, workdir, run_dirs, config_dicts, seed_list, stacked, stop_at_step, stop
        )


def _train(
    config: ml_collections.ConfigDict,
    workdir: Path,
    run_dirs: list[Path],
    config_dicts: list[dict[str, Any]],
    seed_list: list[int],
    stacked: bool,
    stop_at_step: int | None,
    stop: StopRequest,
) -> dict[str, Any] | list[dict[str, Any]]:
    """The stages of :func:`train_and_evaluate` from data to summary, in locked ``run_dirs``
    (``stop``: the SIGTERM/SIGINT request the loop polls)."""
    primary = distributed.is_primary()
    _say(f"Experiment {config.experiment!r}, work directory {workdir}\n{config}", flush=True)
    if stacked:
        _say(f"Seeds {seed_list} trained together (vmapped)", flush=True)

    task = tasks_lib.make_task(config)

    # ------------------------------------------------------------------ data
    inputs = build_inputs(config)
    dataset, preprocess, augment = inputs.dataset, inputs.preprocess, inputs.augment
    mesh = sharding_lib.make_mesh()
    if stacked and jax.process_count() > 1:
        raise ConfigError(
            f"seeds trained together (vmapped) need one process, not {jax.process_count()}: "
            "train them one by one (--sweep.vmap_seeds=false)"
        )
    batch_sharding = sharding_lib.batch_sharding(mesh)
    _check_divisible(config, mesh.size)
    resident = feed_lib.is_resident(
        dataset,
        placement=config.dataset.placement,
        max_device_bytes=config.dataset.max_device_bytes,
    )
    train_feed = feed_lib.TrainFeed(
        dataset.train,
        mesh,
        batch_size=config.batch_size,
        resident=resident,
        num_seeds=len(seed_list) if stacked else None,
    )
    eval_feeds = {
        split: feed_lib.EvalFeed(
            examples, mesh, eval_batch_size=config.eval_batch_size, resident=resident
        )
        for split, examples in (("val", dataset.validation), ("test", dataset.test))
        if examples is not None
    }
    select = "val" if dataset.validation is not None else "test"  # what "best" is chosen on
    steps_per_epoch = train_feed.steps_per_epoch
    if steps_per_epoch == 0:
        raise ConfigError(
            f"batch_size={config.batch_size} exceeds the {len(dataset.train)} training examples"
        )
    durations = dict(steps_per_epoch=steps_per_epoch, batch_size=config.batch_size)
    total_steps = steps("total", config, **durations)
    warmup_steps = steps("warmup", config.schedule, **durations, default=0)
    num_epochs = -(-total_steps // steps_per_epoch)
    validation = f" / {len(dataset.validation):,} validation" if select == "val" else ""
    _say(
        f"Data: {dataset.name}, {len(dataset.train):,} train{validation} / "
        f"{len(dataset.test):,} test images {dataset.train.images.shape[1:]}, "
        f"{dataset.num_classes} classes, "
        f"{'on the device' if resident else 'streamed from host memory'}; "
        f"{mesh.size} {jax.default_backend()} device(s); {total_steps:,} steps "
        f"= {num_epochs} epoch(s) of {steps_per_epoch:,}",
        flush=True,
    )

    # ------------------------------------------------------------------ model
    model = models.get(config.model.name, **config.model.kwargs.to_dict())
    rows = check_model(model, config.model.name, inputs, task)
    _say(f"Model {config.model.name!r}:\n{format_table(rows)}", flush=True)

    # ------------------------------------------------------------------ optimizer, steps
    schedule = optim.make_schedule(config, total_steps=total_steps, warmup_steps=warmup_steps)
    lr_at = jax.jit(schedule)  # one compilation instead of one per op when logging the lr
    tx = optim.make_optimizer(config, schedule)
    init_key, data_key, step_key = _stream_keys(seed_list, stacked)
    train_step = make_train_step(
        model,
        tx,
        task=task,
        preprocess=preprocess,
        augment=augment,
        microbatches=config.microbatches,
        on_nonfinite=config.on_nonfinite,
        dtype=config.dtype,
    )
    eval_chunk = make_eval_chunk(
        model,
        task=task,
        preprocess=preprocess,
        eval_batch_size=config.eval_batch_size,
        batch_sharding=batch_sharding,
        stacked=stacked,
        dtype=config.dtype,
    )

    # ------------------------------------------------------------------ init (shapes first)
    def fresh_state(key: jax.Array) -> TrainState:
        return init_state(
            model, tx, key, jnp.zeros(inputs.input_shape, jnp.float32), dtype=config.dtype
        )

    def with_shardings(tree):
        shardings = sharding_lib.state_shardings(tree, mesh, config.sharding.params)
        return jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings
        )

    abstract_one = with_shardings(jax.eval_shape(fresh_state, jax.random.key(0)))
    abstract = (
        with_shardings(jax.eval_shape(jax.vmap(fresh_state), init_key)) if stacked else abstract_one
    )
    shardings = jax.tree.map(lambda a: a.sharding, abstract)
    train_chunk = make_train_chunk(
        train_step,
        batch_size=config.batch_size,
        batch_sharding=batch_sharding,
        state_shardings=shardings,
        seed_axes=(0, train_feed.data_axis, train_feed.data_axis, 0, None, 0) if stacked else None,
    )

    # ------------------------------------------------------------------ restore
    # The config is sound (every check above passed): from here on the work directories
    # are written.
    checkpoints, logs = [], []
    for run_dir, config_dict in zip(run_dirs, config_dicts, strict=True):
        if primary:
            write_json(run_dir / "config.json", config_dict)
        checkpoints.append(
            Checkpoints(
                run_dir / "checkpoints",
                keep=config.checkpoint.keep,
                keep_best=config.checkpoint.keep_best,
                async_save=config.checkpoint.async_save,
            )
        )
        logs.append(
            MetricsLog(run_dir, metric=task.metric, splits=("train", *eval_feeds), write=primary)
        )
    metric = task.metric
    resumed = restore_newest_verified(checkpoints, abstract_one)
    if resumed is None:
        # Seeds trained together are initialised one by one with the program of one run:
        # random initialisers are slow to compile, and more so vmapped.
        init = jax.jit(fresh_state, out_shardings=jax.tree.map(lambda a: a.sharding, abstract_one))
        if stacked:
            seed_states = [init(_seed_keys(seed)[_INIT_STREAM]) for seed in seed_list]
            state = jax.device_put(_stack(seed_states), shardings)
        else:
            state = init(init_key)
        start_step, elapsed_before = 0, 0.0
    else:
        start_step, restored = resumed
        states = [s for s, _ in restored]
        state = jax.device_put(_stack(states) if stacked else states[0], shardings)
        meta = restored[0][1]
        elapsed_before = max(m["elapsed_seconds"] for _, m in restored)
        _say(
            f"Resumed from checkpoint at step {start_step:,} (epoch "
            f"{meta['epochs_done'] + 1}, step {meta['step_in_epoch']} of {steps_per_epoch})",
            flush=True,
        )
    # The record of an epoch that training goes on with is written again when it ends.
    kept = start_step if start_step >= total_steps else start_step - start_step % steps_per_epoch
    records = [log.truncate(kept) for log in logs]
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(abstract_one.params))
    reset_sums = jax.jit(
        lambda: jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), abstract.sums),
        out_shardings=shardings.sums,
    )

    def meta_for(step: int, elapsed: float, config_dict: dict[str, Any]) -> dict[str, Any]:
        return {
            "epochs_done": step // steps_per_epoch,
            "step_in_epoch": step % steps_per_epoch,
            "elapsed_seconds": elapsed,
            "config": config_dict,
            "versions": _versions(),
        }

    def save_all(step: int, best: list[float | None] | None = None) -> None:
        """Checkpoints every run (each tagged with ``best[k]``; None: untagged)."""
        check_finite()
        states = _unstack(state) if stacked else [state]
        for k, (ckpt, config_dict) in enumerate(zip(checkpoints, config_dicts, strict=True)):
            ckpt.save(
                states[k],
                step=step,
                meta=meta_for(step, clock(), config_dict),
                best_metric=None if best is None else best[k],
            )
        periodic.saved(step)

    def stop_here(step: int, signum: int) -> NoReturn:
        """Saves one checkpoint and stops (signal ``signum``, 0: ``stop_at_step``)."""
        save_all(step)
        raise Interrupted(step, signum or None)

    def stop_signal() -> int:
        """The signal that asked any process to stop (0: none), agreed by all, so that
        they all stop after the same step."""
        return distributed.agree_max(stop.signum or 0)

    def check_finite() -> None:
        """Stops a run with ``on_nonfinite="stop"`` that met a non-finite step."""
        if config.on_nonfinite == "stop":
            _raise_if_diverged(state, seed_list if stacked else None, checkpoints)

    def ends_epoch(step: int) -> bool:
        return step > 0 and (step % steps_per_epoch == 0 or step == total_steps)

    def evaluated(step: int) -> bool:
        return any(r["step"] == step for r in records[-1])

    # ------------------------------------------------------------------ loop
    # A stop is honoured after the train call that is running: at most one more call is
    # queued behind it, and evaluation and periodic saves do not wait. An epoch whose
    # evaluation a stop cut short is evaluated first thing after resuming.
    step = start_step
    clock = _Clock(elapsed_before)
    periodic = SaveSchedule(
        every_steps=config.checkpoint.every_steps,
        every_minutes=config.checkpoint.every_minutes,
        step=step,
    )
    compiled: set[int] = set()  # chunk lengths whose train call is compiled already
    try:
        while step < total_steps or (ends_epoch(step) and not evaluated(step)):
            unevaluated = ends_epoch(step) and not evaluated(step)
            epoch = (step - 1 if unevaluated else step) // steps_per_epoch
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
            # ------------------------------------------------------------ train
            in_flight = None  # the step count of the call before the last
            while step < epoch_end:
                n = min(config.steps_per_call, epoch_end - step)
                if stop_at_step is not None and stop_at_step > step:
                    n = min(n, stop_at_step - step)
                args = train_feed.chunk(step - epoch_start, n)
                progress.before_call(n, in_flight)
                state, done = train_chunk(state, *args, step_key, num_steps=n)
                progress.after_call(n, done, state.sums)
                if in_flight is not None:
                    in_flight.block_until_ready()
                in_flight = done
                step += n
                signum = stop_signal()
                if signum or (stop_at_step is not None and step >= stop_at_step):
                    progress.finish()
                    stop_here(step, signum)
                if distributed.agree_max(periodic.due(step)) and step < epoch_end:
                    save_all(step)
            train_sums = jax.device_get(state.sums)  # waits for the epoch's last step
            check_finite()
            steady_images, steady_seconds = progress.finish()
            # ------------------------------------------------------------ evaluate
            eval_sums = {}
            for split, feed in eval_feeds.items():
                eval_sums[split] = _evaluate(eval_chunk, state, feed, stop_signal)
                if eval_sums[split] is None:
                    stop_here(step, stop_signal())
            # ------------------------------------------------------------ log
            common = {
                "epoch": epoch + 1,
                "step": step,
                "lr": float(lr_at(step - 1)),
                "elapsed_seconds": clock(),
                "epoch_seconds": time.perf_counter() - t_epoch,
                "steady_images": steady_images,
                "steady_seconds": steady_seconds,
            }
            sums = {"train": train_sums, **eval_sums}
            for k, (run_records, log) in enumerate(zip(records, logs, strict=True)):
                record = {**common, **_split_metrics(sums, k if stacked else None, metric)}
                run_records.append(record)
                log.append(record)
                prefix = f"seed {seed_list[k]}: " if stacked else ""
                _say(prefix + console.epoch_line(record, num_epochs, task), flush=True)
            # ------------------------------------------------------------ checkpoint
            if (epoch + 1) % config.checkpoint.every_epochs == 0 or step == total_steps:
                save_all(step, [r[-1][f"{select}_{metric}"] for r in records])
    finally:
        # Whatever happened, finish writing what was started: pending checkpoint writes,
        # event files, and the plot of the epochs done so far.
        for ckpt, log, run_records, run_dir in zip(
            checkpoints, logs, records, run_dirs, strict=True
        ):
            ckpt.close()
            log.close()
            if run_records and primary:
                plot_learning_curves(
                    run_records,
                    run_dir / "learning_curves.png",
                    metric=metric,
                    loss_name=task.loss_name,
                )

    # ------------------------------------------------------------------ summary
    summaries = []
    run_states = _unstack(state) if stacked else [state]
    for k, (run_records, run_dir) in enumerate(zip(records, run_dirs, strict=True)):
        if isinstance(task, tasks_lib.Reconstruction):
            run_state = distributed.to_host(run_states[k])  # on every process: may gather
            if primary:
                images = dataset.test.images[:8]
                _save_reconstructions(model, run_state, preprocess, images, run_dir)
        summary = summarize(
            run_records,
            experiment=config.experiment,
            params=num_params,
            metric=metric,
            target=tasks_lib.target(config, task),
            select=select,
        )
        summary["seed"] = seed_list[k]
        summary["flops_per_example"] = rows[-1].flops
        summary["seeds_trained_together"] = seed_list if stacked else None
        summary["workdir"] = str(run_dir)
        summary["devices"] = [str(d) for d in jax.devices()]
        if primary:
            write_json(run_dir / "summary.json", summary)
        _say(console.final_report(summary, run_dir, task), flush=True)
        summaries.append(summary)
    return summaries if stacked else summaries[0]


def _say(*args: Any, **kwargs: Any) -> None:
    """``print``, on the process that writes the run's files only."""
    if distributed.is_primary():
        print(*args, **kwargs)


def seed_dir(workdir: str | Path, seed: int) -> Path:
    """The run directory of ``seed`` among seeds trained together in ``workdir``."""
    return workdir_lib.as_path(workdir) / f"seed-{seed}"


def _config_dict(config: ml_collections.ConfigDict, seed: int) -> dict[str, Any]:
    """``config`` as JSON-ready dicts, with ``seed``."""
    return {**json.loads(config.to_json_best_effort()), "seed": seed}


def _seed_keys(seed: int) -> list[jax.Array]:
    """The init, data and step keys of ``seed``: ``fold_in(key(seed), stream)`` per
    independent stream."""
    root = jax.random.key(seed)
    return [jax.random.fold_in(root, s) for s in (_INIT_STREAM, _DATA_STREAM, _STEP_STREAM)]


def _stream_keys(seeds: list[int], stacked: bool) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`_seed_keys` of ``seeds``, each stacked to ``(len(seeds),)`` when ``stacked``,
    else those of the one seed."""
    per_seed = [_seed_keys(seed) for seed in seeds]
    if not stacked:
        return tuple(per_seed[0])
    return tuple(jnp.stack([k[i] for k in per_seed]) for i in range(3))


def _stack(trees: list[Any]) -> Any:
    """Trees of equal structure stacked leaf by leaf on a new leading axis (on the host:
    stacking device arrays would compile a program per leaf shape)."""
    return jax.tree.map(lambda *leaves: np.stack(leaves), *jax.device_get(trees))


def _seed_slice(tree: Any, k: int) -> Any:
    """Entry ``k`` of the leading (seed) axis of every leaf (host arrays)."""
    return jax.tree.map(lambda a: a[k], tree)


def _unstack(tree: Any) -> list[Any]:
    """Every seed's tree (host arrays), from a tree stacked on its leading axis: one copy
    off the device, sliced there (slicing device arrays would compile programs)."""
    host = jax.device_get(tree)
    return [_seed_slice(host, k) for k in range(jax.tree.leaves(host)[0].shape[0])]


def _raise_if_diverged(
    state: TrainState, seeds: list[int] | None, checkpoints: list[Checkpoints]
) -> None:
    """Raises DivergedError if a run met a non-finite step, naming the step and the run's
    last good checkpoint (``seeds``: those trained together, else None)."""
    guard = jax.device_get(state.guard)
    runs = [None] if seeds is None else seeds
    problems = []
    for k, seed in enumerate(runs):
        one = guard if seeds is None else _seed_slice(guard, k)
        if one["nonfinite_step"] < 0:
            continue
        steps = checkpoints[k].all_steps()
        last = f"step {steps[-1]:,} in {checkpoints[k].directory}" if steps else "none yet"
        *others, last_one = [name for key, name in _GUARDED.items() if not one[key]]
        what = " and ".join([", ".join(others), last_one] if others else [last_one])
        problems.append(
            ("" if seed is None else f"seed {seed}: ")
            + f"non-finite {what} at step {int(one['nonfinite_step']) + 1:,}; the last good "
            f"checkpoint is {last}"
        )
    if problems:
        raise DivergedError(
            "; ".join(problems) + ". Nothing after it was saved; lower optimizer.base_lr, "
            "or skip such steps with --config.on_nonfinite=skip_step"
        )


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
    process), which is timed apart, between two waits for the device. It times the train
    calls (:meth:`before_call`, :meth:`after_call`); the loop makes them.

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
            # No bar when stdout is not a terminal (logs, CI), nor on processes but 0.
            disable=None if distributed.is_primary() else True,
            dynamic_ncols=True,
        )
        self._batch_size = batch_size
        self._compiled = compiled
        self._task = task
        self._start = self._refreshed = time.perf_counter()
        self._steady_steps = 0
        self._compile_seconds = 0.0

    def before_call(self, num_steps: int, in_flight: jax.Array | None) -> None:
        """Call just before a train call of ``num_steps``; ``in_flight``: the output of an
        earlier call still running, if any (waited for when this call compiles)."""
        self._compiling = num_steps not in self._compiled
        if self._compiling:
            jax.block_until_ready(in_flight)  # so that earlier calls are not counted here
            self._t0 = time.perf_counter()

    def after_call(self, num_steps: int, done: jax.Array, sums: dict[str, jax.Array]) -> None:
        """Call just after it, with its outputs ``done`` and the state's ``sums``."""
        if self._compiling:
            jax.block_until_ready(done)
            self._compile_seconds += time.perf_counter() - self._t0
            self._compiled.add(num_steps)
        else:
            self._steady_steps += num_steps
        self._bar.update(num_steps)
        now = time.perf_counter()
        if not self._bar.disable and now - self._refreshed > _PROGRESS_REFRESH_SECONDS:
            self._refreshed = now
            self._bar.set_postfix_str(console.train_postfix(sums, self._task, *self.steady()))

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


def _evaluate(
    eval_chunk, state: TrainState, eval_feed: feed_lib.EvalFeed, stop_signal: Callable[[], int]
) -> dict[str, Any] | None:
    """Loss/metric/count sums over a whole split (each ``(seeds,)`` for stacked states);
    None when ``stop_signal()`` (agreed by all processes) asked to stop before the split
    was done."""
    total = {"loss": 0.0, "metric": 0.0, "count": 0}
    for images, labels, num_valid in eval_feed.chunks():
        if stop_signal():
            return None
        sums = jax.device_get(eval_chunk(state, images, labels, num_valid))
        total = {k: total[k] + np.asarray(sums[k], np.float64) for k in total}
    return total


def _split_metrics(sums: dict[str, dict[str, Any]], k: int | None, metric: str) -> dict:
    """The record's ``SPLIT_loss``/``SPLIT_<metric>`` of every split in ``sums``, and
    ``skipped_steps``, for seed ``k`` of stacked sums (None: one run)."""
    record = {}
    for split, split_sums in sums.items():
        one = split_sums if k is None else _seed_slice(split_sums, k)
        count = one["count"] or np.nan  # NaN for an epoch whose every step was skipped
        record[f"{split}_loss"] = float(one["loss"] / count)
        record[f"{split}_{metric}"] = float(one["metric"] / count)
    train = sums["train"] if k is None else _seed_slice(sums["train"], k)
    record["skipped_steps"] = int(train["skipped"])
    return record


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
