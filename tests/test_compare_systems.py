"""tools/compare_systems.py: paired differences between two systems of a bench run."""
import csv
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import compare_systems  # noqa: E402


def rows_for(a: np.ndarray, b: np.ndarray, metric: str) -> list[dict]:
    rows = []
    for i, (x, y) in enumerate(zip(a, b)):
        rows.append({"clip": f"c{i}", "system": "A", metric: "" if x is None else str(x)})
        rows.append({"clip": f"c{i}", "system": "B", metric: "" if y is None else str(y)})
    return rows


def slow_half_width(d: list[float]) -> float:
    from scipy.stats import t
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in d) / (n - 1))
    return t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def test_mean_and_interval_match_a_slow_reference():
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    b = rng.normal(2.0, 0.5, size=15)
    a = b + rng.normal(0.3, 0.1, size=15)
    (entry,) = compare_systems.paired_differences(rows_for(a, b, "pesq"), "A", "B")
    d = list(a - b)
    assert entry["metric"] == "PESQ-WB" and entry["n"] == 15
    assert entry["mean"] == pytest.approx(sum(d) / 15, rel=1e-12)
    assert entry["ci"] == pytest.approx(slow_half_width(d), rel=1e-9)
    assert entry["favours"] == "A"


def test_lower_is_better_metrics_favour_the_smaller_value_and_ties_are_ties():
    b = np.linspace(1.0, 2.0, 10)
    (worse,) = compare_systems.paired_differences(rows_for(b + 0.2 + 0.01 * np.arange(10), b, "log_mel"), "A", "B")
    assert worse["favours"] == "B"
    noise = np.array([0.1, -0.1] * 5)
    (tie,) = compare_systems.paired_differences(rows_for(b + noise, b, "log_mel"), "A", "B")
    assert tie["favours"] == "a tie"


def test_clips_missing_a_score_on_either_side_are_left_out():
    a = [1.0, 2.0, None, 4.0, float("nan")]
    b = [0.5, 1.0, 1.0, None, 1.0]
    (entry,) = compare_systems.paired_differences(rows_for(a, b, "stoi"), "A", "B")
    assert entry["n"] == 2 and entry["mean"] == pytest.approx(0.75)


def test_unknown_system_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "results.csv"
    rows = rows_for(np.ones(3), np.ones(3), "pesq")
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["clip", "system", "pesq"])
        writer.writeheader()
        writer.writerows(rows)
    assert compare_systems.main([str(path), "A", "C"]) == 1
    assert "no system 'C' in the results; they hold: A, B" in capsys.readouterr().err
    assert compare_systems.main([str(tmp_path / "missing.csv"), "A", "B"]) == 1
    assert compare_systems.main([str(path), "A", "B"]) == 0
    assert "| PESQ-WB | +0.000 ± 0.000 | 3 | a tie |" in capsys.readouterr().out
