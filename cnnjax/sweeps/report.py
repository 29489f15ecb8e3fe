"""The report of a sweep directory: a CSV of every run, a Markdown summary, and plots.

:func:`write_report` reads only what is on disk, so it works on a finished sweep, on one
still running or interrupted, and again later (``python launch.py --report SWEEPDIR``).

What it reads (written by the runner)::

  SWEEPDIR/sweep.json               name, experiment, points, seeds, metrics, baseline,
                                    sweep_overrides (the sweep file's, {field: value}),
                                    overrides (the command line's --config.X=V strings)
  SWEEPDIR/<point>/seed-<k>/        an ordinary run directory:
      summary.json                  present when the run finished: status "ok"
      error.json                    {"type", "error"} when it failed: status "failed"
      metrics.jsonl                 one record per epoch (the learning curves)

A run with neither ``summary.json`` nor ``error.json`` is "missing" (not started, or
interrupted). Only "ok" runs enter the statistics and plots; failed and missing runs are
listed in ``results.md``.

What it writes into SWEEPDIR:

``results.csv``
  One row per (point, seed) of ``sweep.json``, points in their order, then seeds. Columns:
  ``point``; ``seed``; ``status`` (ok, failed or missing); one column per metric of
  ``sweep.json``, named as in ``summary.json`` (raw values: accuracies as fractions in
  [0, 1]); ``params`` (trainable parameters); ``flops_per_example`` (forward FLOPs per
  example); ``train_seconds`` (wall time of training, compilation included);
  ``train_images_per_second`` (steady state, compilation excluded); ``epochs`` (epochs
  trained); ``error`` (``Type: message`` of a failed run). A cell is empty where the run
  has no such value (a failed or missing run has only ``point``, ``seed``, ``status`` and,
  if failed, ``error``).

``results.md``
  A title with the sweep's name and base experiment, the seeds and overrides (the sweep
  file's, then the command line's), and the
  count of runs per status; then a table with one row per point: ``ok`` (finished
  seeds / seeds); per metric, titled ``<metric>`` (``<metric> (%)`` for accuracies):
  ``mean ± std`` (``ddof=1``), ``95 % CI`` (Student's t interval of the mean over the ok
  seeds) and ``per seed`` (each seed's value in seed order, ``–`` for a seed with no
  value); ``params``; ``MFLOPs`` (forward, per example); ``train s`` (mean
  ``train_seconds`` over ok seeds); ``images/s`` (mean ``train_images_per_second``). Then "Paired
  comparison with <baseline>": per other point and metric, ``pairs`` (seeds finished in
  both), the mean difference point − baseline, its 95 % CI and the two-sided paired t-test
  p-value (:mod:`cnnjax.sweeps.stats`). Then the failed runs with their errors and the
  missing runs, and links to the plots. Accuracies (metrics whose name contains
  "accuracy") are shown in %, and their differences in percentage points, with 2 decimals;
  other metrics with 4 significant digits. ``–`` stands for no value (no finished run, or a
  spread from fewer than two seeds).

``<metric>.png``
  Per metric: a bar per point at the mean over ok seeds, 95 % CI error bars, each seed's
  value as a dot; the y axis spans the data, not zero.

``learning_curves.png``
  The task's test metric (``test_accuracy`` in %, or ``test_psnr``) per epoch of every
  point overlaid: the mean over ok seeds as a line, the min–max band over seeds shaded.
  Written only when some run is ok.

``<metric>_vs_flops.png``
  Per metric: the point means against forward MFLOPs per example, with 95 % CI error bars,
  each marker labelled with its point. Written only when some point has
  ``flops_per_example``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnjax.sweeps.layout import run_dir, run_status
from cnnjax.sweeps.stats import Description, PairedComparison, describe, paired

NONE = "–"  # an empty cell: no value, or no spread from fewer than two seeds
# Columns of results.csv copied from summary.json after the metrics.
RUN_FIELDS = (
    "params",
    "flops_per_example",
    "train_seconds",
    "train_images_per_second",
    "epochs",
)


@dataclasses.dataclass(frozen=True)
class Run:
    """One (point, seed) of a sweep, as found on disk.

    Attributes:
      point: the point's label (its directory name).
      seed: the run's seed.
      status: "ok" (``summary.json``), "failed" (``error.json``) or "missing" (neither).
      summary: the run's ``summary.json`` (``{}`` unless ok).
      error: ``Type: message`` from ``error.json`` (``""`` unless failed).
      records: the run's ``metrics.jsonl`` records, oldest first (``[]`` if absent).
    """

    point: str
    seed: int
    status: str
    summary: Mapping[str, Any]
    error: str
    records: Sequence[Mapping[str, Any]]

    def value(self, key: str) -> Any:
        """``summary[key]``, or None where the run or its summary has no such value."""
        return self.summary.get(key)


# ----------------------------------------------------------------------------- reading


def read_sweep(sweep_dir: str | Path) -> dict[str, Any]:
    """The sweep's ``sweep.json``."""
    return json.loads((Path(sweep_dir) / "sweep.json").read_text())


def load_runs(sweep_dir: str | Path) -> list[Run]:
    """Every (point, seed) of ``sweep.json``, points in their order, then seeds."""
    sweep = read_sweep(sweep_dir)
    return [
        _load_run(run_dir(sweep_dir, point, seed), point, seed)
        for point in sweep["points"]
        for seed in sweep["seeds"]
    ]


def _load_run(workdir: Path, point: str, seed: int) -> Run:
    records = _read_records(workdir / "metrics.jsonl")
    status = run_status(workdir)
    if status == "ok":
        summary = json.loads((workdir / "summary.json").read_text())
        return Run(point, seed, status, summary, "", records)
    if status == "failed":
        error = json.loads((workdir / "error.json").read_text())
        return Run(point, seed, status, {}, f"{error['type']}: {error['error']}", records)
    return Run(point, seed, status, {}, "", records)


def _read_records(path: Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (``[]`` if absent), oldest first.

    A process killed while appending can leave a partial last line; it is dropped (the
    resumed run rewrites that epoch).
    """
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines[:-1]]
    with contextlib.suppress(IndexError, json.JSONDecodeError):  # IndexError: an empty file
        records.append(json.loads(lines[-1]))
    return records


# ----------------------------------------------------------------------------- the report


def write_report(sweep_dir: str | Path) -> str:
    """Writes ``results.csv``, ``results.md`` and the plots into ``sweep_dir`` (see the
    module docstring) and returns the text of ``results.md``."""
    sweep_dir = Path(sweep_dir)
    sweep = read_sweep(sweep_dir)
    runs = load_runs(sweep_dir)
    by_point = {point: [r for r in runs if r.point == point] for point in sweep["points"]}
    write_csv(sweep_dir / "results.csv", runs, sweep["metrics"])
    plots = write_plots(sweep_dir, by_point, sweep["metrics"])
    text = markdown(sweep, by_point, plots)
    (sweep_dir / "results.md").write_text(text)
    return text


def write_csv(path: Path, runs: Sequence[Run], metrics: Sequence[str]) -> None:
    """``results.csv``: one row per run (columns in the module docstring)."""
    header = ["point", "seed", "status", *metrics, *RUN_FIELDS, "error"]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for run in runs:
            values = [run.value(key) for key in (*metrics, *RUN_FIELDS)]
            writer.writerow(
                [run.point, run.seed, run.status, *("" if v is None else v for v in values)]
                + [run.error]
            )


def ok_values(runs: Sequence[Run], metric: str) -> dict[int, float]:
    """``{seed: value}`` of ``metric`` over the ok runs that have it."""
    return {
        r.seed: r.value(metric) for r in runs if r.status == "ok" and r.value(metric) is not None
    }


def point_mean(runs: Sequence[Run], key: str) -> float | None:
    """Mean of ``summary[key]`` over the ok runs that have it (None if none does)."""
    values = list(ok_values(runs, key).values())
    return float(np.mean(values)) if values else None


# ----------------------------------------------------------------------------- markdown


def markdown(
    sweep: Mapping[str, Any], by_point: Mapping[str, Sequence[Run]], plots: Sequence[str]
) -> str:
    """The text of ``results.md`` (sections in the module docstring)."""
    runs = [r for point_runs in by_point.values() for r in point_runs]
    statuses = {s: sum(r.status == s for r in runs) for s in ("ok", "failed", "missing")}
    changes = [f"`{k}={v!r}`" for k, v in sweep.get("sweep_overrides", {}).items()]
    overrides = " ".join(changes + [f"`{o}`" for o in sweep["overrides"]]) or "none"
    parts = [
        f"# Sweep {sweep['name']}: {sweep['experiment']}",
        f"Seeds: {', '.join(map(str, sweep['seeds']))}. Overrides: {overrides}. "
        f"Runs: {statuses['ok']} ok, {statuses['failed']} failed, "
        f"{statuses['missing']} missing, of {len(runs)}.",
        points_table(by_point, sweep["seeds"], sweep["metrics"]),
        f"## Paired comparison with {sweep['baseline']}",
        "Difference point − baseline (accuracies in percentage points) over the seeds "
        "finished in both; two-sided paired t-test.",
        paired_table(by_point, sweep["baseline"], sweep["metrics"]),
        *problem_lists(runs),
        *(f"![{Path(p).stem}]({p})" for p in plots),
    ]
    return "\n\n".join(parts) + "\n"


def points_table(
    by_point: Mapping[str, Sequence[Run]], seeds: Sequence[int], metrics: Sequence[str]
) -> str:
    """The table with one row per point."""
    header = ["point", "ok"]
    for metric in metrics:
        name = _metric_name(metric)
        header += [f"{name} mean ± std", f"{name} 95 % CI", f"{name} per seed"]
    header += ["params", "MFLOPs", "train s", "images/s"]
    rows = []
    for point, runs in by_point.items():
        row = [point, f"{sum(r.status == 'ok' for r in runs)}/{len(seeds)}"]
        for metric in metrics:
            values = ok_values(runs, metric)
            d = describe(list(values.values()))
            row += [
                f"{format_value(metric, d.mean)} ± {format_value(metric, d.std)}" if d.n else NONE,
                _interval(metric, d.ci_low, d.ci_high),
                ", ".join(format_value(metric, values.get(s)) for s in seeds),
            ]
        flops = point_mean(runs, "flops_per_example")
        row += [
            _number(point_mean(runs, "params"), ",.0f"),
            _number(None if flops is None else flops / 1e6, ".4g"),
            _number(point_mean(runs, "train_seconds"), ".1f"),
            _number(point_mean(runs, "train_images_per_second"), ",.0f"),
        ]
        rows.append(row)
    return _markdown_table(header, rows)


def paired_table(
    by_point: Mapping[str, Sequence[Run]], baseline: str, metrics: Sequence[str]
) -> str:
    """Every other point against ``baseline``, per metric."""
    header = ["point", "metric", "pairs", "mean difference", "95 % CI", "p-value"]
    rows = []
    for point, runs in by_point.items():
        if point == baseline:
            continue
        for metric in metrics:
            c = paired(ok_values(runs, metric), ok_values(by_point[baseline], metric))
            rows.append(_paired_row(point, metric, c))
    return _markdown_table(header, rows)


def _paired_row(point: str, metric: str, c: PairedComparison) -> list[str]:
    difference = format_value(metric, c.mean_difference)
    if c.n and not difference.startswith("-"):
        difference = "+" + difference
    return [
        point,
        _metric_name(metric),
        str(c.n),
        difference,
        _interval(metric, c.ci_low, c.ci_high),
        _number(c.p_value, ".4g"),
    ]


def problem_lists(runs: Sequence[Run]) -> list[str]:
    """Markdown sections listing failed runs (with their errors) and missing runs."""
    sections = []
    failed = [r for r in runs if r.status == "failed"]
    if failed:
        lines = [f"- {r.point} seed {r.seed}: {r.error}" for r in failed]
        sections.append("## Failed runs\n\n" + "\n".join(lines))
    missing = [r for r in runs if r.status == "missing"]
    if missing:
        lines = [f"- {r.point} seed {r.seed}" for r in missing]
        sections.append("## Missing runs (not run yet, or interrupted)\n\n" + "\n".join(lines))
    return sections


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


# ----------------------------------------------------------------------------- plots


def write_plots(
    sweep_dir: Path, by_point: Mapping[str, Sequence[Run]], metrics: Sequence[str]
) -> list[str]:
    """Writes the PNGs of the module docstring into ``sweep_dir``; returns their names."""
    names = []
    for metric in metrics:
        plot_metric(sweep_dir / f"{metric}.png", by_point, metric)
        names.append(f"{metric}.png")
    if plot_learning_curves(sweep_dir / "learning_curves.png", by_point):
        names.append("learning_curves.png")
    for metric in metrics:
        if plot_against_flops(sweep_dir / f"{metric}_vs_flops.png", by_point, metric):
            names.append(f"{metric}_vs_flops.png")
    return names


def plot_metric(path: Path, by_point: Mapping[str, Sequence[Run]], metric: str) -> None:
    """Bars of the point means with 95 % CI error bars, each seed's value a dot.

    The y axis spans the seeds and intervals, not zero: ablation effects are often a few
    tenths of a percent on top of 98 %, invisible on bars drawn from zero.
    """
    plt = _pyplot()
    scale = _scale(metric)
    points = list(by_point)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(points)), 4))
    shown = []
    for i, point in enumerate(points):
        values = scale * np.asarray(list(ok_values(by_point[point], metric).values()))
        if not values.size:
            continue
        d = describe(values)
        ax.bar(i, d.mean, yerr=_error_bar(d), capsize=4, color="C0", alpha=0.5)
        offsets = np.linspace(-0.15, 0.15, values.size) if values.size > 1 else np.zeros(1)
        ax.plot(i + offsets, values, "o", color="k", markersize=3)
        shown += [*values, d.ci_low, d.ci_high]
    _fit_y(ax, shown)
    ax.set_xticks(range(len(points)), points, rotation=30, ha="right")
    ax.set(ylabel=_metric_name(metric), title=f"{metric}\nmean over seeds, 95 % CI, each seed")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_learning_curves(path: Path, by_point: Mapping[str, Sequence[Run]]) -> bool:
    """The test metric per epoch of every point: mean over ok seeds, min–max band.

    Returns False (and writes nothing) when no ok run has records.
    """
    ok = [r for runs in by_point.values() for r in runs if r.status == "ok" and r.records]
    if not ok:
        return False
    metric = ok[0].summary["metric"]
    key, scale = f"test_{metric}", _scale(metric)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for i, (point, runs) in enumerate(by_point.items()):
        by_epoch = _values_by_epoch([r for r in runs if r.status == "ok"], key)
        if not by_epoch:
            continue
        epochs = sorted(by_epoch)
        values = [scale * np.asarray(by_epoch[e]) for e in epochs]
        ax.plot(epochs, [v.mean() for v in values], "-", color=f"C{i}", label=point)
        lows, highs = [v.min() for v in values], [v.max() for v in values]
        ax.fill_between(epochs, lows, highs, color=f"C{i}", alpha=0.2)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="epoch", ylabel=_metric_name(key), title=f"{key}: mean over seeds, min–max")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
    return True


def plot_against_flops(path: Path, by_point: Mapping[str, Sequence[Run]], metric: str) -> bool:
    """Point means of ``metric`` against forward MFLOPs per example, with 95 % CIs.

    Returns False (and writes nothing) when no point with values has FLOPs.
    """
    scale = _scale(metric)
    marks = []
    for point, runs in by_point.items():
        flops, values = point_mean(runs, "flops_per_example"), ok_values(runs, metric)
        if flops is not None and values:
            marks.append((point, flops / 1e6, describe(scale * np.asarray(list(values.values())))))
    if not marks:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for point, mflops, d in marks:
        ax.errorbar(mflops, d.mean, yerr=_error_bar(d), fmt="o", capsize=4)
        ax.annotate(point, (mflops, d.mean), textcoords="offset points", xytext=(5, 5))
    ax.set(xlabel="forward MFLOPs per example", ylabel=_metric_name(metric))
    ax.set_title(f"{metric} against FLOPs: mean, 95 % CI")
    ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def _values_by_epoch(runs: Sequence[Run], key: str) -> dict[int, list[float]]:
    """``{epoch: [value of key in each run's record of that epoch]}``."""
    out: dict[int, list[float]] = {}
    for run in runs:
        for record in run.records:
            if record.get(key) is not None:
                out.setdefault(record["epoch"], []).append(record[key])
    return out


def _fit_y(ax, ys: Sequence[float]) -> None:
    """Sets the y limits of ``ax`` to the finite ``ys`` with a margin (no change if none)."""
    ys = [y for y in ys if np.isfinite(y)]
    if not ys:
        return
    low, high = min(ys), max(ys)
    margin = 0.2 * (high - low) or 0.05 * abs(high) or 1.0
    ax.set_ylim(low - margin, high + margin)


def _error_bar(d: Description) -> np.ndarray:
    """``yerr`` of one mean, shape ``(2, 1)``: distances to the CI ends (0 without a CI)."""
    if d.n < 2:
        return np.zeros((2, 1))
    return np.array([[d.mean - d.ci_low], [d.ci_high - d.mean]])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


# ----------------------------------------------------------------------------- formatting


def _is_accuracy(metric: str) -> bool:
    return "accuracy" in metric


def _scale(metric: str) -> float:
    """What a metric's values are multiplied by for display (accuracies in %)."""
    return 100.0 if _is_accuracy(metric) else 1.0


def _metric_name(metric: str) -> str:
    """The metric's column title: accuracies say they are in %."""
    return f"{metric} (%)" if _is_accuracy(metric) else metric


def format_value(metric: str, value: float | None) -> str:
    """A metric's value as shown: accuracies in % with 2 decimals, others with 4 digits."""
    if value is None or np.isnan(value):
        return NONE
    return f"{_scale(metric) * value:.2f}" if _is_accuracy(metric) else f"{value:.4g}"


def _interval(metric: str, low: float, high: float) -> str:
    if np.isnan(low):
        return NONE
    return f"[{format_value(metric, low)}, {format_value(metric, high)}]"


def _number(value: float | None, spec: str) -> str:
    return NONE if value is None or np.isnan(value) else format(value, spec)
