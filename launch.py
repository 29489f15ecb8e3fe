"""The entry point: ``python launch.py --exp NAME [--workdir DIR] [--config.FIELD=VALUE ...]``.

  --exp NAME            an experiment, experiments/NAME.py
  --sweep NAME          an ablation sweep, experiments/sweeps/NAME.py: every (point, seed)
                        trained into SWEEPDIR/<point>/seed-<k>/ (default SWEEPDIR:
                        runs/sweeps/NAME; relaunching resumes), then the report
  --report SWEEPDIR     write a sweep's report (results.csv, results.md, plots) from disk
  --list                list the experiments and sweeps and exit
  --workdir DIR         where outputs go (default: a new runs/NAME-DATE-TIME); relaunching
                        with the same DIR resumes from its latest checkpoint
  --data_dir DIR        TFDS data directory (default: $TFDS_DATA_DIR, else TFDS's own)
  --config.FIELD=VALUE  override any config field, e.g. --config.optimizer.lr=1e-3
  --sweep.FIELD=VALUE   change the sweep: seeds=5, only=avg,max, vmap_seeds=true, baseline=L
  --workers N           a sweep's runs N at a time, as local processes
  --executor ray        a sweep's runs as tasks on a Ray cluster (--ray_address HOST:PORT;
                        default: a local Ray instance)
  --summary             print the layer table (shapes, params, FLOPs, receptive fields)
  --visualize           write filters.png and feature_maps_<stage>.png into the work directory
  --gradcheck           float64 finite-difference check of the model's loss gradient
                        (any of these three: no training; they read two test images)
  --restart             start afresh in a work directory that holds a run: its files are
                        moved to set_aside/ (never deleted)
  --debug               print the traceback of an error, not only its one line
  --coordinator_address HOST:PORT, --num_processes N, --process_id K
                        this process is process K of N that train one run together
                        (JAX's distributed runtime); detected without flags under SLURM
                        and on Cloud TPU VMs

Exit status: one per kind of failure, in :data:`EXIT_CODES` (the README prints
:func:`exit_status_table`). The work happens in :func:`cnnjax.training.train_and_evaluate`,
:mod:`cnnjax.sweeps` and :mod:`cnnjax.analysis`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
import traceback
from pathlib import Path

from cnnjax.host_memory import reexec_with_allocator

if __name__ == "__main__":
    # The loader and malloc read their settings only at process start: before anything
    # heavy is imported, this command runs again with its allocator (cnnjax.host_memory).
    try:
        reexec_with_allocator()
    except ValueError as e:  # a bad CNNJAX_MALLOC: bad input, the status of a ConfigError
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)

from cnnjax import analysis, models, sweeps
from cnnjax.training import (
    ConfigError,
    Interrupted,
    apply_overrides,
    available_experiments,
    distributed,
    experiment_description,
    load_experiment,
    train_and_evaluate,
    validate,
)
from cnnjax.training.errors import (
    DatasetUnavailableError,
    DivergedError,
    GradcheckFailedError,
    IncompatibleResumeError,
    ModelInputError,
    NoVerifiedCheckpointError,
    WorkdirError,
    WorkdirLockedError,
)
from cnnjax.training.inputs import build_inputs, check_model

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"
SWEEPS_DIR = EXPERIMENTS_DIR / "sweeps"
# Exit status of a sweep that finished with failed runs.
SWEEP_FAILED = 3
# Exit status of an error that is a bug of cnnjax's (its traceback is always printed).
INTERNAL_ERROR = 1
# The exit status of each kind of failure a user can cause or meet; the most specific
# type of an error that is listed decides. Besides: 0 done, INTERNAL_ERROR, SWEEP_FAILED,
# and 128 + N when signal N stopped training (a checkpoint was saved; the command resumes).
EXIT_CODES: dict[type[Exception], int] = {
    ConfigError: 2,
    DatasetUnavailableError: 4,
    ModelInputError: 5,
    WorkdirError: 6,
    WorkdirLockedError: 7,
    IncompatibleResumeError: 8,
    NoVerifiedCheckpointError: 9,
    DivergedError: 10,
    GradcheckFailedError: 11,
}


def exit_status(error: BaseException) -> int:
    """The exit status of ``error``: that of its most specific listed type."""
    for cls in type(error).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    return INTERNAL_ERROR


def exit_status_table() -> str:
    """Every exit status with its meaning, as the Markdown table the README prints."""
    rows = [
        (0, "training (or the tool, or the sweep) finished"),
        (INTERNAL_ERROR, "an internal error, a bug of cnnjax's: the traceback is printed"),
        (SWEEP_FAILED, "a sweep finished with failed runs (listed in its results.md)"),
        *((code, f"`{cls.__name__}`: {_doc_line(cls)}") for cls, code in EXIT_CODES.items()),
        ("128+N", "signal N (SIGTERM: 143, SIGINT: 130) stopped training after a checkpoint"),
    ]
    rows.sort(key=lambda row: (isinstance(row[0], str), row[0]))
    return "\n".join(
        ["| exit status | meaning |", "|---|---|", *(f"| {c} | {m} |" for c, m in rows)]
    )


def _doc_line(cls: type) -> str:
    return " ".join(cls.__doc__.split()).replace("``", "`")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train and evaluate an experiment.",
        epilog="Any other argument must be a config override --config.FIELD=VALUE.",
        allow_abbrev=False,
    )
    parser.add_argument("--exp", help="experiment name (a file in experiments/)")
    parser.add_argument("--sweep", help="sweep name (a file in experiments/sweeps/)")
    parser.add_argument("--report", metavar="SWEEPDIR", help="write a sweep's report from disk")
    parser.add_argument("--list", action="store_true", help="list experiments, sweeps and exit")
    parser.add_argument("--workers", type=int, default=1, help="a sweep's local processes")
    parser.add_argument(
        "--executor",
        default="local",
        choices=sweeps.EXECUTORS,
        help="where a sweep's runs go: local processes or a Ray cluster",
    )
    parser.add_argument("--ray_address", help="Ray cluster address (default: start locally)")
    parser.add_argument("--workdir", help="output directory (default: a new one in runs/)")
    parser.add_argument("--data_dir", help="TFDS data directory (default: $TFDS_DATA_DIR)")
    parser.add_argument(
        "--summary",
        action="store_true",
        help="print each layer's output shape, params, FLOPs, receptive field",
    )
    parser.add_argument(
        "--visualize",
        action="store_true",
        help="write PNGs of first-layer filters and feature maps to --workdir",
    )
    parser.add_argument(
        "--gradcheck",
        action="store_true",
        help="float64 finite-difference check of the loss gradient per layer",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start afresh in a work directory that holds a run (its files are set aside)",
    )
    parser.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    parser.add_argument("--coordinator_address", help="HOST:PORT of process 0 (multi-process)")
    parser.add_argument("--num_processes", type=int, help="processes training one run")
    parser.add_argument("--process_id", type=int, help="this process's index among them")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    An error of a kind in :data:`EXIT_CODES` is printed as its one line (with its
    traceback under ``--debug``); any other is a bug and printed with its traceback.
    """
    args, overrides = _parser().parse_known_args(argv)
    if not args.debug:  # orbax logs the failures it raises, with tracebacks, through absl
        logging.getLogger("absl").setLevel(logging.CRITICAL)
    try:
        if args.exp:  # before anything touches the devices
            distributed.initialize(args.coordinator_address, args.num_processes, args.process_id)
        elif args.coordinator_address or args.num_processes or args.process_id is not None:
            raise ConfigError("--coordinator_address/--num_processes/--process_id need --exp")
        return _dispatch(args, overrides)
    except tuple(EXIT_CODES) as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {_one_line(e)}", file=sys.stderr)
        if not args.debug:
            # The other pending writes of a checkpoint that failed are garbage-collected
            # at exit, and asyncio logs each one's exception: the failure is reported above.
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        return exit_status(e)


def _unless_closed_loop(unraisable) -> None:
    """Reports an unraisable exception unless it is TensorStore calling back into an event
    loop that orbax closed after a failed checkpoint read or write (one per pending
    request, each a traceback, after the failure itself was reported)."""
    error = unraisable.exc_value
    if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"):
        sys.__unraisablehook__(unraisable)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _dispatch(args: argparse.Namespace, overrides: list[str]) -> int:
    sweep_flags = [o for o in overrides if o.startswith("--sweep.")]
    overrides = [o for o in overrides if not o.startswith("--sweep.")]
    if args.list:
        return _list()
    if args.report:
        return _report(args.report)
    if args.sweep:
        return _run_sweep(args, overrides, sweep_flags)
    if sweep_flags:
        raise ConfigError(f"{sweep_flags[0]} needs --sweep NAME")
    if not args.exp:
        _parser().print_usage(sys.stderr)
        raise ConfigError("--exp NAME, --sweep NAME or --report SWEEPDIR is required (see --list)")
    config = load_experiment(args.exp, EXPERIMENTS_DIR)
    apply_overrides(config, overrides)
    if args.data_dir:
        config.dataset.data_dir = args.data_dir
    validate(config, models=models.available())
    workdir = args.workdir or f"runs/{args.exp}-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.summary or args.visualize or args.gradcheck:
        return _run_tools(args, config, workdir)
    try:
        train_and_evaluate(config, workdir, restart=args.restart)
    except Interrupted as e:
        name = signal.Signals(e.signum).name if e.signum else "stop_at_step"
        print(
            f"{name}: saved a checkpoint at step {e.step:,} in {workdir}/checkpoints. "
            f"Resume with: python launch.py --exp {args.exp} --workdir {workdir}"
            + "".join(f" {o}" for o in overrides),
            file=sys.stderr,
        )
        return 128 + e.signum if e.signum else 0
    return 0


def _list() -> int:
    print("Experiments:")
    for name in available_experiments(EXPERIMENTS_DIR):
        print(f"  {name:<28} {experiment_description(name, EXPERIMENTS_DIR)}")
    print("Sweeps (points x seeds = runs):")
    for name in sweeps.available_sweeps(SWEEPS_DIR):
        try:
            sweep = sweeps.load_sweep(name, SWEEPS_DIR)
            points, seeds = len(sweep.point_values()), len(sweep.seed_list())
            size = f"{points} x {seeds} = {points * seeds}"
            print(f"  {name:<28} {size:<14} {sweep.description}")
        except ConfigError as e:
            print(f"  {name:<28} broken: {e}")
    return 0


def _report(sweep_dir: str) -> int:
    try:
        print(sweeps.write_report(sweep_dir))
    except FileNotFoundError as e:
        print(f"error: --report {sweep_dir}: not a sweep directory ({e})", file=sys.stderr)
        return 2
    print(f"Report in {sweep_dir}/: results.csv, results.md, *.png")
    return 0


def _run_sweep(args: argparse.Namespace, overrides: list[str], sweep_flags: list[str]) -> int:
    if args.exp:
        raise ConfigError("give --exp NAME or --sweep NAME, not both")
    if args.data_dir:
        overrides = [*overrides, f"--config.dataset.data_dir={args.data_dir}"]
    sweep_dir = args.workdir or f"runs/sweeps/{args.sweep}"
    try:
        sweep = sweeps.apply_sweep_flags(sweeps.load_sweep(args.sweep, SWEEPS_DIR), sweep_flags)
        counts = sweeps.run_sweep(
            sweep,
            args.sweep,
            sweep_dir,
            experiments_dir=EXPERIMENTS_DIR,
            overrides=overrides,
            executor=args.executor,
            workers=args.workers,
            ray_address=args.ray_address,
        )
    except sweeps.Stopped as e:
        print(
            f"{signal.Signals(e.signum).name}: sweep stopped; runs in flight saved checkpoints "
            f"in {sweep_dir}. Resume with the same command.",
            file=sys.stderr,
        )
        return 128 + e.signum
    print(sweeps.write_report(sweep_dir))
    print(
        f"Sweep {args.sweep!r}: {counts['ok']} runs finished, {counts['failed']} failed; "
        f"report in {sweep_dir}/results.md"
    )
    return SWEEP_FAILED if counts["failed"] else 0


def _run_tools(args: argparse.Namespace, config, workdir: str) -> int:
    """--summary / --visualize / --gradcheck, on the experiment's first test images."""
    inputs = build_inputs(config)
    model = models.get(config.model.name, **config.model.kwargs.to_dict())
    check_model(model, config.model.name, inputs)
    status = analysis.run_tools(
        model,
        inputs.preprocess(inputs.dataset.test.images[:2]),
        inputs.dataset.test.labels[:2],
        seed=config.seed,
        summary=args.summary,
        visualize_dir=workdir if args.visualize else None,
        gradcheck=args.gradcheck,
    )
    if status:
        raise GradcheckFailedError(
            f"the gradient check of {config.model.name!r} failed (table above)"
        )
    return 0


if __name__ == "__main__":
    if "--debug" not in sys.argv:  # for the whole process: they come until it exits
        sys.unraisablehook = _unless_closed_loop
    sys.exit(main())
