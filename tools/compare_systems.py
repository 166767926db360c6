"""Clip-by-clip comparison of two systems of one benchmark run: paired differences A − B.

    python tools/compare_systems.py bench_out/heldout_itru/results.csv speech16k-nq1 speech16k_vq-nq1

For each metric, the mean over the clips both systems were scored on of (A − B), with its 95%
Student-t half-width, and which system the difference favours (a tie when the interval holds
0). Pairing removes the clip-to-clip spread that the per-system confidence intervals carry, so
it can tell two systems apart where their intervals overlap. System ids are the ``system``
column of ``results.csv`` (e.g. ``speech16k-nq12``, ``opus-6kbps``, ``codec2-3200``).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys


from codec.report import mean_ci  # noqa: E402

# metric column -> (label, higher is better)
METRICS = {
    "pesq": ("PESQ-WB", True),
    "stoi": ("STOI", True),
    "visqol": ("ViSQOL", True),
    "si_sdr": ("SI-SDR dB", True),
    "log_mel": ("log-mel distance", False),
    "mrstft": ("MR-STFT distance", False),
    "actual_kbps": ("actual kbps", False),
}


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def paired_differences(rows: list[dict], a: str, b: str) -> list[dict]:
    """One entry per metric: mean and 95% half-width of A − B over the clips scored for both."""
    by_clip: dict[str, dict[str, dict]] = {}
    for row in rows:
        if row.get("system") in (a, b):
            by_clip.setdefault(row["clip"], {})[row["system"]] = row
    for name in (a, b):
        if not any(name in pair for pair in by_clip.values()):
            systems = sorted({row.get("system", "") for row in rows})
            raise ValueError(f"no system {name!r} in the results; they hold: {', '.join(systems)}")
    out = []
    for metric, (label, higher) in METRICS.items():
        diffs = []
        for pair in by_clip.values():
            if a in pair and b in pair:
                x, y = _number(pair[a].get(metric)), _number(pair[b].get(metric))
                if x is not None and y is not None:
                    diffs.append(x - y)
        if len(diffs) < 2:
            continue
        mean, half, n = mean_ci(diffs)
        if abs(mean) <= half:
            verdict = "a tie"
        else:
            verdict = a if (mean > 0) == higher else b
        out.append({"metric": label, "mean": mean, "ci": half, "n": n, "favours": verdict})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="results.csv of a codec bench run")
    parser.add_argument("a", help="system id A")
    parser.add_argument("b", help="system id B")
    args = parser.parse_args(argv)
    try:
        with open(args.results, newline="") as f:
            rows = list(csv.DictReader(f))
        table = paired_differences(rows, args.a, args.b)
    except (OSError, ValueError) as err:
        print(f"compare_systems: error: {err}", file=sys.stderr)
        return 1
    print(f"| metric ({args.a} − {args.b}) | mean ± 95% CI | clips | favours |")
    print("|---|--:|--:|---|")
    for entry in table:
        print(f"| {entry['metric']} | {entry['mean']:+.3f} ± {entry['ci']:.3f} | {entry['n']} | {entry['favours']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
