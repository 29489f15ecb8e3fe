"""Running a sweep: every (point, seed) trained by ``train_and_evaluate`` into its own run
directory ``SWEEPDIR/<point>/seed-<k>/``, sequentially, in local worker processes, or as
tasks on a Ray cluster.

Protocol
--------
- ``SWEEPDIR/sweep.json`` records the points, seeds, metrics and baseline (what the report
  reads); a relaunch with more seeds or points extends it, and a point whose values
  changed is refused (its runs would mix two configs).
- A run is *finished* when its ``summary.json`` exists: a relaunch skips it. Any other
  run is started with ``train_and_evaluate``, which resumes from its latest checkpoint,
  so a sweep killed at any moment finishes with nothing recomputed but the steps after
  the last checkpoint (and those are recomputed bit for bit on CPU).
- A run that raises is *failed*: ``error.json`` (exception type and message) is written
  into its directory, the traceback goes to its ``train.log``, and the sweep goes on. A
  relaunch retries failed runs.
- SIGTERM/SIGINT stops the sweep: the runs in flight save a checkpoint (the trainer's
  own preemption handling) and the sweep exits with 128 + the signal number.
- Each run's console output goes to its ``train.log``; the console shows a progress bar
  over runs and one line per finished run.

Executors
---------
``local`` with ``workers=1`` trains in this process. ``local`` with ``workers=N`` keeps N
child processes (``spawn``, so each has its own JAX runtime) busy, one task each.
``ray`` submits every task to a Ray cluster (``ray.init(address)``; ``None`` starts a
local instance) with the sweep's ``resources`` request; the sweep directory must then be
on storage every node sees. A task is one run, or with vmapped seeds all of a point's
pending seeds, trained together by ``train_and_evaluate(..., seeds=...)``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import multiprocessing
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import ml_collections
from tqdm import tqdm

from cnnjax import models
from cnnjax.analysis.summary import layer_rows
from cnnjax.sweeps.layout import STATUSES, run_dir, run_status
from cnnjax.sweeps.report import format_value
from cnnjax.sweeps.spec import Sweep, run_config
from cnnjax.training import ConfigError, Interrupted, train_and_evaluate
from cnnjax.training.inputs import build_inputs
from cnnjax.training.metrics import write_json
from cnnjax.training.signals import HANDLED, StopRequest

EXECUTORS = ("local", "ray")

# Seconds between checks of local worker processes.
_POLL_SECONDS = 0.2


@dataclasses.dataclass(frozen=True)
class Task:
    """One unit of work for an executor: a point and the seeds trained in it.

    Attributes:
      sweep: the sweep.
      point: the point's label.
      seeds: its seeds to train; several only when ``vmap`` is set.
      vmap: train ``seeds`` together as one vmapped program.
      sweep_dir: the sweep's directory.
      experiments_dir: where the base experiment's file is.
      overrides: the command line's ``--config.FIELD=VALUE`` arguments.
    """

    sweep: Sweep
    point: str
    seeds: tuple[int, ...]
    vmap: bool
    sweep_dir: str
    experiments_dir: str
    overrides: tuple[str, ...]

    def run_dirs(self) -> list[Path]:
        return [run_dir(self.sweep_dir, self.point, seed) for seed in self.seeds]


# Forward FLOPs per example up to which a point's seeds train faster as one vmapped
# program than one after another: benchmarks/sweep_speed.py measured 2.1-2.8x faster at
# 0.19, 0.83 and 2.7 MFLOPs (digits_lenet, mnist_lenet, slot_cnn) and 0.68x at 27.8
# (tf_tutorial_cnn), 8 seeds on a 2-core CPU; in between is unmeasured, so sequential.
VMAP_MAX_FLOPS = 3e6


def use_vmap(
    sweep: Sweep, *, executor: str, workers: int, num_seeds: int, flops: Callable[[], int]
) -> bool:
    """Whether a point's seeds are trained as one vmapped program.

    ``sweep.vmap_seeds`` decides when set. Otherwise vmap when the seeds would run one
    after another in one process anyway (the local executor with one worker), there are
    several, and the point's model costs at most :data:`VMAP_MAX_FLOPS` forward FLOPs per
    example (``flops()``, called only then), where it measured faster.
    """
    if sweep.vmap_seeds is not None:
        return sweep.vmap_seeds
    if executor != "local" or workers != 1 or num_seeds < 2:
        return False
    return flops() <= VMAP_MAX_FLOPS


def point_flops(config: ml_collections.ConfigDict) -> int:
    """Forward FLOPs per example of ``config``'s model on its inputs (loads the data)."""
    model = models.get(config.model.name, **config.model.kwargs.to_dict())
    return layer_rows(model, build_inputs(config).input_shape)[-1].flops


# ----------------------------------------------------------------------------- planning


def check_points(
    sweep: Sweep, *, experiments_dir: str | Path, overrides: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Builds every point's config for every seed (raises ConfigError on the first bad
    one, before anything trains); returns ``{label: {field: value}}``."""
    points = sweep.point_values()
    for point in points:
        for seed in sweep.seed_list():
            run_config(sweep, point, seed, experiments_dir=experiments_dir, overrides=overrides)
    sweep.baseline_label()
    return points


def record_sweep(sweep: Sweep, name: str, sweep_dir: Path, overrides: Sequence[str]) -> None:
    """Writes (or extends) ``sweep_dir/sweep.json``; raises ConfigError if a point recorded
    there now has other values, or the base experiment changed."""
    points = _jsonable(sweep.point_values())
    record = {
        "name": name,
        "experiment": sweep.experiment,
        "points": points,
        "seeds": sweep.seed_list(),
        "metrics": list(sweep.metrics),
        "baseline": sweep.baseline_label(),
        "sweep_overrides": _jsonable(dict(sweep.overrides)),
        "overrides": list(overrides),
    }
    path = sweep_dir / "sweep.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old["experiment"] != record["experiment"]:
            raise ConfigError(
                f"{sweep_dir} holds a sweep of {old['experiment']!r}, not "
                f"{record['experiment']!r}: use another --workdir"
            )
        for label, values in old["points"].items():
            if label in points and points[label] != values:
                raise ConfigError(
                    f"point {label!r} in {sweep_dir} was run with {values}, now {points[label]}:"
                    " use another --workdir"
                )
        record["points"] = {**points, **old["points"]}  # this sweep's order first (values agree)
        record["seeds"] = sorted(set(old["seeds"]) | set(record["seeds"]))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, record, sort_keys=False)  # the points' order is the report's


def _jsonable(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples become lists), for comparisons."""
    return json.loads(json.dumps(obj))


def plan(
    sweep: Sweep,
    sweep_dir: Path,
    *,
    vmap: Callable[[str], bool],
    experiments_dir: str | Path,
    overrides: Sequence[str],
) -> tuple[list[Task], int]:
    """The tasks still to do, and the number of runs already finished; ``vmap(point)``
    says whether a point's pending seeds train together."""
    tasks, done = [], 0
    for point in sweep.point_values():
        pending = []
        for seed in sweep.seed_list():
            if run_status(run_dir(sweep_dir, point, seed)) == "ok":
                done += 1
            else:
                pending.append(seed)
        together = len(pending) > 1 and vmap(point)
        groups = [tuple(pending)] if together else [(s,) for s in pending]
        tasks += [
            Task(
                sweep=sweep,
                point=point,
                seeds=group,
                vmap=len(group) > 1,
                sweep_dir=str(sweep_dir),
                experiments_dir=str(experiments_dir),
                overrides=tuple(overrides),
            )
            for group in groups
        ]
    return tasks, done


# ----------------------------------------------------------------------------- one task


def execute(task: Task) -> dict[int, str]:
    """Trains ``task`` (in whatever process runs it); returns ``{seed: status}``.

    Raises:
      Interrupted: SIGTERM/SIGINT stopped training; checkpoints are saved.
    """
    dirs = task.run_dirs()
    for directory in dirs:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "error.json").unlink(missing_ok=True)
    with _output_to(dirs) as log:
        try:
            config = run_config(
                task.sweep,
                task.point,
                task.seeds[0],
                experiments_dir=task.experiments_dir,
                overrides=task.overrides,
            )
            if task.vmap:
                train_and_evaluate(config, Path(task.sweep_dir) / task.point, seeds=task.seeds)
            else:
                train_and_evaluate(config, dirs[0])
        except Interrupted:
            raise
        except Exception as e:  # a failed run is recorded; the sweep goes on
            traceback.print_exc(file=log)
            error = {"type": type(e).__name__, "error": _first_line(e)}
            for directory in dirs:
                write_json(directory / "error.json", error)
    return _statuses(task)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else repr(e)


class _Tee:
    """A text stream writing to several files."""

    def __init__(self, files: list[TextIO]):
        self._files = files

    def write(self, text: str) -> int:
        for f in self._files:
            f.write(text)
        return len(text)

    def flush(self) -> None:
        for f in self._files:
            f.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def _output_to(dirs: list[Path]) -> Iterator[TextIO]:
    """Sends stdout and stderr to ``train.log`` in each of ``dirs`` (appended)."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context((d / "train.log").open("a")) for d in dirs]
        tee = _Tee(files)
        stack.enter_context(contextlib.redirect_stdout(tee))
        stack.enter_context(contextlib.redirect_stderr(tee))
        yield tee


# ----------------------------------------------------------------------------- executors


class Stopped(Exception):  # noqa: N818 -- a request, not an error
    """SIGTERM/SIGINT stopped the sweep; the runs in flight saved checkpoints."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


def _run_in_process(tasks: list[Task], on_done: Callable[[Task, dict[int, str]], None]) -> None:
    # A signal between runs, or while one starts, stops the sweep too: the next train
    # loop starts out stopped (and saves a checkpoint), or the next run is not started.
    with StopRequest() as stop:
        for task in tasks:
            if stop.requested:
                raise Stopped(stop.signum)
            try:
                statuses = execute(task)
            except Interrupted as e:  # the trainer saved a checkpoint
                raise Stopped(e.signum or signal.SIGTERM) from None
            on_done(task, statuses)


def _child(task: Task) -> None:
    """A local worker process: one task; exits 128 + N when signal N stopped it.

    It leaves the terminal's process group, so that Ctrl-C reaches only the sweep
    process, which forwards one SIGTERM (a second signal would abort the checkpoint).
    """
    os.setsid()
    with StopRequest() as stop:
        try:
            execute(task)
        except Interrupted as e:
            sys.exit(128 + (e.signum or 0))
        if stop.requested:  # came after the run's last checkpoint: the run is complete
            sys.exit(128 + stop.signum)


def _run_in_workers(
    tasks: list[Task], on_done: Callable[[Task, dict[int, str]], None], *, workers: int
) -> None:
    """Keeps ``workers`` child processes busy; on SIGTERM/SIGINT forwards SIGTERM to them
    (each saves a checkpoint), waits for them, and raises Stopped."""
    ctx = multiprocessing.get_context("spawn")
    queue, running = list(tasks), {}
    stopped: list[int] = []

    def stop(signum: int, frame: object) -> None:
        del frame
        stopped.append(signum)
        for process in running:
            process.terminate()

    previous = {s: signal.signal(s, stop) for s in HANDLED}
    try:
        while queue or running:
            while queue and len(running) < workers and not stopped:
                task = queue.pop(0)
                process = ctx.Process(target=_child, args=(task,), daemon=True)
                process.start()
                running[process] = task
            for process in [p for p in running if not p.is_alive()]:
                task = running.pop(process)
                process.join()
                on_done(task, _statuses(task))
            if stopped and not running:
                raise Stopped(stopped[0])
            time.sleep(_POLL_SECONDS)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _statuses(task: Task) -> dict[int, str]:
    return {seed: run_status(d) for seed, d in zip(task.seeds, task.run_dirs(), strict=True)}


def _run_on_ray(
    tasks: list[Task],
    on_done: Callable[[Task, dict[int, str]], None],
    *,
    address: str | None,
) -> None:
    """Submits every task to Ray and reports them as they finish; on SIGTERM/SIGINT
    cancels them (a cancelled run resumes from its last checkpoint) and raises Stopped."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ConfigError(
            "--executor ray needs Ray: pip install 'cnnjax[ray]' (or 'ray[default]')"
        ) from None
    if not ray.is_initialized():
        # A local instance needs no dashboard and reports no usage statistics off this
        # machine; a cluster's settings are the cluster's.
        local = {} if address else {"include_dashboard": False}
        if not address:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        ray.init(address=address, log_to_driver=False, **local)
    remote = ray.remote(execute)
    refs = {
        remote.options(**_ray_options(task.sweep.resources)).remote(task): task for task in tasks
    }

    def stop(signum: int, frame: object) -> None:
        del frame
        raise Stopped(signum)

    previous = {s: signal.signal(s, stop) for s in HANDLED}
    try:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                on_done(refs[ref], ray.get(ref))
    except Stopped:
        for ref in refs:
            ray.cancel(ref)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _ray_options(resources: dict[str, Any]) -> dict[str, Any]:
    """``Sweep.resources`` as ``ray.remote(...).options`` keywords."""
    resources = dict(resources)
    options = {k: resources.pop(k) for k in ("num_cpus", "num_gpus") if k in resources}
    if resources:
        options["resources"] = resources
    return options


# ----------------------------------------------------------------------------- the sweep


def run_sweep(
    sweep: Sweep,
    name: str,
    sweep_dir: str | Path,
    *,
    experiments_dir: str | Path,
    overrides: Sequence[str] = (),
    executor: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
) -> dict[str, int]:
    """Runs every (point, seed) of ``sweep`` not finished yet in ``sweep_dir``.

    Args:
      sweep: the sweep (after ``--sweep.`` flags).
      name: its name, recorded in ``sweep.json``.
      sweep_dir: the sweep's directory; relaunching on it resumes.
      experiments_dir: where the base experiment's file is.
      overrides: ``--config.FIELD=VALUE`` arguments applied to every point.
      executor: ``"local"`` or ``"ray"``.
      workers: local processes at a time (``local`` only).
      ray_address: the Ray cluster (``None``: start a local instance).

    Returns:
      Counts of runs by status: ``ok``, ``failed``, ``missing`` (not run).

    Raises:
      ConfigError: a bad point, seed or executor setting, before anything trains.
      Stopped: SIGTERM/SIGINT stopped the sweep; in-flight runs saved checkpoints.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if workers < 1:
        raise ConfigError(f"--workers must be a positive int, got {workers}")
    sweep_dir = Path(sweep_dir)
    check_points(sweep, experiments_dir=experiments_dir, overrides=overrides)
    record_sweep(sweep, name, sweep_dir, overrides)
    seeds = sweep.seed_list()

    def vmap(point: str) -> bool:
        config = functools.partial(
            run_config, sweep, point, seeds[0], experiments_dir=experiments_dir, overrides=overrides
        )
        return use_vmap(
            sweep,
            executor=executor,
            workers=workers,
            num_seeds=len(seeds),
            flops=lambda: point_flops(config()),
        )

    tasks, done = plan(
        sweep, sweep_dir, vmap=vmap, experiments_dir=experiments_dir, overrides=overrides
    )
    together = sorted({t.point for t in tasks if t.vmap})
    total = len(sweep.point_values()) * len(seeds)
    where = {"local": f"{workers} local worker(s)", "ray": f"Ray ({ray_address or 'local'})"}
    print(
        f"Sweep {name!r}: {len(sweep.point_values())} points x {len(seeds)} seeds = {total} "
        f"runs of {sweep.experiment!r} in {sweep_dir}; {done} finished already; "
        f"{where[executor]}; seeds vmapped in: {', '.join(together) or 'none'}",
        flush=True,
    )
    # The bar shows in a terminal; logs get the per-run lines, which carry the count and ETA.
    bar = tqdm(total=total, initial=done, desc="runs", unit="run", disable=None, leave=True)
    start, finished = time.perf_counter(), done

    def on_done(task: Task, statuses: dict[int, str]) -> None:
        nonlocal finished
        for seed, status in statuses.items():
            finished += 1
            bar.update(1)
            elapsed = time.perf_counter() - start
            eta = elapsed / (finished - done) * (total - finished)
            progress = f"[{finished}/{total}, {elapsed:.0f} s, ETA {eta:.0f} s]"
            bar.write(f"{progress} {_run_line(task, seed, status)}", file=sys.stdout)

    try:
        if executor == "ray":
            _run_on_ray(tasks, on_done, address=ray_address)
        elif workers == 1:
            _run_in_process(tasks, on_done)
        else:
            _run_in_workers(tasks, on_done, workers=workers)
    finally:
        bar.close()
    counts = dict.fromkeys(STATUSES, 0)
    for point in sweep.point_values():
        for seed in seeds:
            counts[run_status(run_dir(sweep_dir, point, seed))] += 1
    return counts


def _run_line(task: Task, seed: int, status: str) -> str:
    directory = run_dir(task.sweep_dir, task.point, seed)
    if status == "ok":
        summary = json.loads((directory / "summary.json").read_text())
        values = ", ".join(f"{m} {format_value(m, summary.get(m))}" for m in task.sweep.metrics)
        return f"{task.point} seed {seed}: {values} ({summary['train_seconds']:.0f} s)"
    if status == "failed":
        error = json.loads((directory / "error.json").read_text())
        return f"{task.point} seed {seed}: FAILED {error['type']}: {error['error']}"
    return f"{task.point} seed {seed}: not finished"
