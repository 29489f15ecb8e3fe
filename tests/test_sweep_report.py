"""Sweep statistics and reports: numbers checked against scipy, numpy and closed forms.

The report runs on a sweep directory written by hand here (no training): four points
whose runs are finished, failed, missing, or from an older trainer without FLOPs.
"""

import csv
import json
import math

import numpy as np
import pytest
import scipy.stats

from cnnjax.sweeps.report import load_runs, write_report
from cnnjax.sweeps.stats import describe, paired

# --------------------------------------------------------------------------- statistics


def test_describe_matches_numpy_and_scipy():
    x = np.random.default_rng(0).normal(0.97, 0.01, size=7)
    d = describe(list(x))
    low, high = scipy.stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=scipy.stats.sem(x))
    assert d.n == 7
    assert d.mean == pytest.approx(np.mean(x), rel=1e-12)
    assert d.std == pytest.approx(np.std(x, ddof=1), rel=1e-12)
    assert (d.ci_low, d.ci_high) == pytest.approx((low, high), rel=1e-12)


def test_describe_by_hand():
    # Three values: 2 degrees of freedom, where Student's t has closed forms; the 97.5 %
    # quantile is (2q - 1) / sqrt(2 q (1 - q)) with q = 0.975.
    d = describe([1.0, 2.0, 6.0])
    t975 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    std = math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2)
    assert (d.n, d.mean, d.std) == (3, pytest.approx(3.0), pytest.approx(std))
    assert std == pytest.approx(math.sqrt(7))
    half = t975 * std / math.sqrt(3)
    assert (d.ci_low, d.ci_high) == pytest.approx((3 - half, 3 + half))


def test_describe_has_no_spread_below_two_values():
    empty, one = describe([]), describe([0.5])
    assert empty.n == 0 and math.isnan(empty.mean)
    assert one.n == 1 and one.mean == 0.5
    for d in (empty, one):
        assert math.isnan(d.std) and math.isnan(d.ci_low) and math.isnan(d.ci_high)


def test_paired_matches_ttest_rel_over_shared_seeds():
    rng = np.random.default_rng(1)
    a = {s: float(v) for s, v in enumerate(rng.normal(0.95, 0.02, size=6))}
    b = {s: float(v) for s, v in enumerate(rng.normal(0.94, 0.02, size=8)) if s != 2}
    shared = [0, 1, 3, 4, 5]
    xa, xb = np.array([a[s] for s in shared]), np.array([b[s] for s in shared])
    diff = xa - xb
    ci = scipy.stats.t.interval(0.95, 4, loc=diff.mean(), scale=scipy.stats.sem(diff))
    c = paired(a, b)
    assert c.n == 5
    assert c.mean_difference == pytest.approx(diff.mean(), rel=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx(ci, rel=1e-12)
    assert c.p_value == pytest.approx(scipy.stats.ttest_rel(xa, xb).pvalue, rel=1e-10)


def test_paired_by_hand():
    # Differences 2, 1, 6 (seed 3 is only in b): mean 3, std sqrt(7), t = 3 / sqrt(7 / 3);
    # with 2 degrees of freedom the two-sided p-value is 1 - |t| / sqrt(t^2 + 2).
    c = paired({0: 12.0, 1: 11.0, 2: 16.0}, {0: 10.0, 1: 10.0, 2: 10.0, 3: 0.0})
    t = 3 / math.sqrt(7 / 3)
    half = 0.95 / math.sqrt(2 * 0.975 * 0.025) * math.sqrt(7 / 3)
    assert (c.n, c.mean_difference) == (3, pytest.approx(3.0))
    assert (c.ci_low, c.ci_high) == pytest.approx((3 - half, 3 + half))
    assert c.p_value == pytest.approx(1 - t / math.sqrt(t**2 + 2))


def test_paired_with_identical_differences_or_too_few_pairs():
    # Binary fractions, so the differences are exactly equal.
    shifted = paired({0: 0.75, 1: 0.5, 2: 0.625}, {0: 0.25, 1: 0.0, 2: 0.125})
    assert shifted.mean_difference == 0.5
    assert shifted.p_value == 0.0
    assert shifted.ci_low == shifted.ci_high == shifted.mean_difference
    same = paired({0: 0.9, 1: 0.8}, {0: 0.9, 1: 0.8})
    assert (same.n, same.mean_difference, same.p_value) == (2, 0.0, 1.0)
    assert same.ci_low == same.ci_high == 0.0
    one = paired({0: 0.9, 1: 0.8}, {1: 0.7})
    assert one.n == 1 and one.mean_difference == pytest.approx(0.1)
    assert math.isnan(one.ci_low) and math.isnan(one.p_value)
    none = paired({0: 0.9}, {1: 0.7})
    assert none.n == 0 and math.isnan(none.mean_difference)


# --------------------------------------------------------------------------- the report

METRICS = ["final_test_accuracy", "final_test_loss"]
SEEDS = [0, 1, 2]
# {point: {seed: (final accuracy, final loss)}} of the finished runs.
FINISHED = {
    "max": {0: (0.9812, 0.0611), 1: (0.9790, 0.0702), 2: (0.9833, 0.0583)},
    "avg": {0: (0.9771, 0.0745), 1: (0.9765, 0.0760)},
    "strided": {0: (0.9702, 0.0931)},
}
FLOPS = {"max": 2_340_000, "avg": 2_350_000}  # strided's run predates flops_per_example
FAILED = ("avg", 2, {"type": "FloatingPointError", "error": "loss is nan at step 12"})


def _summary(point: str, seed: int) -> dict:
    accuracy, loss = FINISHED[point][seed]
    summary = {
        "experiment": "mnist_lenet",
        "params": {"max": 61706, "avg": 61706, "strided": 64810}[point],
        "epochs": 3,
        "steps": 1407,
        "metric": "accuracy",
        "final_test_accuracy": accuracy,
        "best_test_accuracy": accuracy,
        "final_test_loss": loss,
        "best_epoch": 3,
        "train_seconds": 40.0 + seed + len(point),
        "train_images_per_second": 5000.0 + 100 * seed,
        "target_accuracy": None,
        "seconds_to_target": None,
    }
    if point in FLOPS:
        summary["flops_per_example"] = FLOPS[point]
    return summary


def _records(accuracy: float, epochs: int = 3) -> list[dict]:
    return [
        {
            "epoch": e,
            "step": 469 * e,
            "lr": 0.01,
            "train_loss": 0.5 / e,
            "train_accuracy": accuracy - 0.01 / e,
            "test_loss": 0.4 / e,
            "test_accuracy": accuracy - 0.02 * (epochs - e),
            "elapsed_seconds": 13.0 * e,
            "epoch_seconds": 13.0,
            "steady_images": 60000,
            "steady_seconds": 12.0,
        }
        for e in range(1, epochs + 1)
    ]


def _write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory):
    """A sweep of four points: max (3 ok), avg (2 ok, 1 failed), strided (1 ok without
    FLOPs, 1 interrupted after an epoch, 1 not started), dilated (nothing run)."""
    root = tmp_path_factory.mktemp("sweep")
    sweep = {
        "name": "pooling",
        "experiment": "mnist_lenet",
        "points": {
            "max": {"model.kwargs.pool": "max"},
            "avg": {"model.kwargs.pool": "avg"},
            "strided": {"model.kwargs.pool": "strided_conv"},
            "dilated": {"model.kwargs.pool": "dilated"},
        },
        "seeds": SEEDS,
        "metrics": METRICS,
        "baseline": "max",
        "overrides": ["--config.num_epochs=3"],
    }
    (root / "sweep.json").write_text(json.dumps(sweep))
    for point, seeds in FINISHED.items():
        for seed, (accuracy, _) in seeds.items():
            run = root / point / f"seed-{seed}"
            run.mkdir(parents=True)
            (run / "summary.json").write_text(json.dumps(_summary(point, seed)))
            _write_jsonl(run / "metrics.jsonl", _records(accuracy))
    point, seed, error = FAILED
    (root / point / f"seed-{seed}").mkdir()
    (root / point / f"seed-{seed}" / "error.json").write_text(json.dumps(error))
    (root / "strided" / "seed-1").mkdir()
    # Interrupted while appending its second epoch.
    partial = json.dumps(_records(0.96, epochs=2)[1])[:40]
    _write_jsonl(root / "strided" / "seed-1" / "metrics.jsonl", _records(0.96, epochs=1))
    with (root / "strided" / "seed-1" / "metrics.jsonl").open("a") as f:
        f.write(partial)
    text = write_report(root)
    return root, text


def test_load_runs_finds_every_status(sweep_dir):
    root, _ = sweep_dir
    runs = load_runs(root)
    status = {(r.point, r.seed): r.status for r in runs}
    assert len(status) == 4 * 3
    assert [k for k, s in status.items() if s == "failed"] == [("avg", 2)]
    assert sorted(k for k, s in status.items() if s == "ok") == sorted(
        (p, s) for p, seeds in FINISHED.items() for s in seeds
    )
    assert status[("strided", 1)] == status[("dilated", 0)] == "missing"
    records = {(r.point, r.seed): r.records for r in runs}
    assert records[("max", 2)] == _records(FINISHED["max"][2][0])
    assert records[("strided", 1)] == _records(0.96, epochs=1)
    assert records[("dilated", 0)] == []


def test_results_csv_equals_the_summaries(sweep_dir):
    root, _ = sweep_dir
    with (root / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["point"], int(r["seed"])) for r in rows] == [
        (p, s) for p in ("max", "avg", "strided", "dilated") for s in SEEDS
    ]
    numeric = [*METRICS, "params", "train_seconds", "train_images_per_second", "epochs"]
    for row in rows:
        point, seed = row["point"], int(row["seed"])
        if seed in FINISHED.get(point, {}):
            summary = _summary(point, seed)
            assert row["status"] == "ok" and row["error"] == ""
            for key in numeric:
                assert float(row[key]) == summary[key], (point, seed, key)
            expected_flops = summary.get("flops_per_example")
            assert row["flops_per_example"] == (
                "" if expected_flops is None else str(expected_flops)
            )
        else:
            assert all(row[key] == "" for key in numeric)
    failed = next(r for r in rows if r["status"] == "failed")
    assert (failed["point"], failed["seed"]) == ("avg", "2")
    assert failed["error"] == "FloatingPointError: loss is nan at step 12"
    assert sum(r["status"] == "missing" for r in rows) == 2 + 3


def _table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row of ``text`` whose first cell is ``first_cell``."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{text}")


def _values(point: str, index: int) -> np.ndarray:
    return np.array([v[index] for v in FINISHED[point].values()])


def test_results_md_shows_independently_computed_statistics(sweep_dir):
    root, text = sweep_dir
    assert (root / "results.md").read_text() == text
    assert text.startswith("# Sweep pooling: mnist_lenet")
    assert "Seeds: 0, 1, 2" in text and "`--config.num_epochs=3`" in text
    acc, loss = 100 * _values("max", 0), _values("max", 1)
    acc_ci = scipy.stats.t.interval(0.95, 2, loc=acc.mean(), scale=scipy.stats.sem(acc))
    loss_ci = scipy.stats.t.interval(0.95, 2, loc=loss.mean(), scale=scipy.stats.sem(loss))
    assert _table_row(text, "max") == [
        "max",
        "3/3",
        f"{acc.mean():.2f} ± {acc.std(ddof=1):.2f}",
        f"[{acc_ci[0]:.2f}, {acc_ci[1]:.2f}]",
        "98.12, 97.90, 98.33",
        f"{loss.mean():.4g} ± {loss.std(ddof=1):.4g}",
        f"[{loss_ci[0]:.4g}, {loss_ci[1]:.4g}]",
        "0.0611, 0.0702, 0.0583",
        "61,706",
        "2.34",
        f"{np.mean([43.0, 44.0, 45.0]):.1f}",
        "5,100",
    ]
    avg = _table_row(text, "avg")
    assert avg[1] == "2/3" and avg[4] == "97.71, 97.65, –"
    strided = _table_row(text, "strided")
    assert strided[1:5] == ["1/3", "97.02 ± –", "–", "97.02, –, –"] and strided[9] == "–"
    nothing = ["–", "–", "–, –, –"]
    assert _table_row(text, "dilated")[1:] == ["0/3", *nothing, *nothing, "–", "–", "–", "–"]

    assert "## Paired comparison with max" in text
    a, b = 100 * _values("avg", 0), 100 * _values("max", 0)[:2]
    diff = a - b
    ci = scipy.stats.t.interval(0.95, 1, loc=diff.mean(), scale=scipy.stats.sem(diff))
    p = scipy.stats.ttest_rel(a, b).pvalue
    row = next(
        r for r in (line.strip("| ").split(" | ") for line in text.splitlines())
        if r[:2] == ["avg", "final_test_accuracy (%)"]
    )  # fmt: skip
    assert row[2:] == ["2", f"{diff.mean():+.2f}", f"[{ci[0]:.2f}, {ci[1]:.2f}]", f"{p:.4g}"]
    assert "| strided | final_test_accuracy (%) | 1 | -1.10 | – | – |" in text
    assert "| dilated | final_test_loss | 0 | – | – | – |" in text

    assert "- avg seed 2: FloatingPointError: loss is nan at step 12" in text
    assert "- strided seed 1" in text and "- dilated seed 2" in text


@pytest.mark.parametrize(
    "name",
    [
        "final_test_accuracy.png",
        "final_test_loss.png",
        "learning_curves.png",
        "final_test_accuracy_vs_flops.png",
        "final_test_loss_vs_flops.png",
    ],
)
def test_plots_are_png_files(sweep_dir, name):
    root, text = sweep_dir
    data = (root / name).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1024
    assert f"]({name})" in text


def test_report_of_a_sweep_with_nothing_finished(tmp_path):
    sweep = {"name": "empty", "experiment": "digits_lenet", "points": {"a": {}, "b": {}},
             "seeds": [0], "metrics": ["final_test_accuracy"], "baseline": "a",
             "overrides": []}  # fmt: skip
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    text = write_report(tmp_path)
    assert _table_row(text, "a")[1:] == ["0/1", "–", "–", "–", "–", "–", "–", "–"]
    assert "Runs: 0 ok, 0 failed, 2 missing, of 2." in text
    assert (tmp_path / "final_test_accuracy.png").exists()
    assert not (tmp_path / "learning_curves.png").exists()
