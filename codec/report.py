"""Benchmark outputs: per-clip results, summary tables, rate-distortion plots, an HTML report.

:func:`write_outputs` turns the benchmark's rows (one dict per clip and system, see
``codec.bench.evaluate``) into these files in the output folder, each written atomically
(a temporary file renamed over the target):

    results.csv        one row per clip, system and bitrate
    summary.csv        one row per system: means and 95% confidence half-widths
    summary.md         the same as a Markdown table; then, when the clips span several splits
                       or speakers (a manifest's columns), one table per split and per speaker
    groups.csv         those groups' summaries: summary.csv's columns after "group" and "value"
    plots/<metric>.png one rate-distortion plot per metric: every system on the same axes,
                       x = actual kbps (log scale), error bars = 95% confidence intervals
    report.html        plots, summary, and an <audio> player for the reference and every
                       system on every clip (audio/<clip>/<system>.wav, written by the bench)

Confidence intervals are Student-t intervals: mean +- t(0.975, n - 1) * s / sqrt(n), with s
the sample standard deviation (ddof 1) over the clips where the metric is defined; none for
n = 1. Without scipy the normal quantile 1.96 stands in for t.
"""
from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import numpy as np

from codec.fileio import atomic_write
from codec.metrics import METRICS, metric_versions

ROW_COLUMNS = ["clip", "kind", "split", "speaker", "duration_s", "sample_rate", "system", "curve", "family", "setting", "n_q",
               "nominal_kbps", "actual_kbps", "rate_source", "bytes", "lag_samples", *METRICS, "audio"]
DIGITS = {"pesq": 2, "stoi": 3, "visqol": 2, "si_sdr": 1, "log_mel": 3, "mrstft": 3,
          "nominal_kbps": 2, "actual_kbps": 2}
REFERENCE = "reference"


def audio_path(clip_id: str, name: str) -> str:
    """Where the bench keeps a clip's decoded audio, relative to the output folder."""
    return f"audio/{clip_id}/{name}.wav"


# ---------------------------------------------------------------------------- statistics
def _t_quantile(dof: int) -> float:
    try:
        from scipy.stats import t
    except ImportError:
        return 1.959964
    return float(t.ppf(0.975, dof))


def mean_ci(values: Sequence[float | None]) -> tuple[float, float, int]:
    """(mean, 95% t-interval half-width, n) over the finite values; NaN where undefined."""
    x = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan, 0
    if x.size == 1:
        return float(x[0]), math.nan, 1
    return float(x.mean()), _t_quantile(x.size - 1) * float(x.std(ddof=1)) / math.sqrt(x.size), int(x.size)


def summarize(rows: list[dict], metrics: Sequence[str]) -> list[dict]:
    """One dict per system (in order of first appearance): means and CI half-widths over its clips."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["system"], []).append(row)
    summary = []
    for system, members in groups.items():
        first = members[0]
        entry = {key: first[key] for key in ("system", "curve", "family", "setting", "order", "rate_source")}
        entry["n"] = len(members)
        entry["nominal_kbps"] = mean_ci([r["nominal_kbps"] for r in members])[0]
        entry["actual_kbps"], entry["actual_kbps_ci95"], _ = mean_ci([r["actual_kbps"] for r in members])
        for name in metrics:
            entry[name], entry[f"{name}_ci95"], entry[f"{name}_n"] = mean_ci([r.get(name) for r in members])
        summary.append(entry)
    return summary


GROUPINGS = ("split", "speaker")   # row columns the report breaks the summary down by


def group_summaries(rows: list[dict], metrics: Sequence[str]) -> list[tuple[str, str, list[dict]]]:
    """[(column, value, summary of the rows with that value)] for each of GROUPINGS that takes more
    than one value over the rows, values in order of first appearance."""
    groups = []
    for column in GROUPINGS:
        values = list(dict.fromkeys(row.get(column) or "" for row in rows))
        if len(values) > 1:
            groups += [(column, value, summarize([r for r in rows if (r.get(column) or "") == value], metrics))
                       for value in values]
    return groups


def summary_columns(metrics: Sequence[str]) -> list[str]:
    return ["system", "curve", "family", "setting", "n", "nominal_kbps", "actual_kbps", "actual_kbps_ci95",
            "rate_source", *[c for name in metrics for c in (name, f"{name}_ci95", f"{name}_n")]]


# ---------------------------------------------------------------------------- tables
def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def csv_text(rows: list[dict], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return buffer.getvalue()


def format_mean_ci(mean: float, ci: float, digits: int) -> str:
    """"2.31 ± 0.12", or "2.31" without an interval, or "–" without a value."""
    if not math.isfinite(mean):
        return "–"
    text = f"{mean:.{digits}f}"
    return f"{text} ± {ci:.{digits}f}" if math.isfinite(ci) else text


def _header_label(name: str) -> str:
    return f"{METRICS[name].label} {'↑' if METRICS[name].higher_is_better else '↓'}"


def _metric_cell(entry: dict, name: str) -> str:
    """Mean ± CI, with "(n=k)" when the metric is defined on only k of the system's clips."""
    text = format_mean_ci(entry[name], entry[f"{name}_ci95"], DIGITS[name])
    defined = entry[f"{name}_n"]
    return f"{text} (n={defined})" if 0 < defined < entry["n"] else text


def _table(summary: list[dict], metrics: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """(header, rows of text): the summary table both summary.md and report.html show."""
    header = ["system", "setting", "clips", "nominal kbps", "actual kbps", *map(_header_label, metrics)]
    body = []
    for s in summary:
        nominal = format_mean_ci(s["nominal_kbps"], math.nan, 2)
        actual = format_mean_ci(s["actual_kbps"], s["actual_kbps_ci95"], 2)
        body.append([_legend(s), s["setting"], str(s["n"]), nominal, actual, *[_metric_cell(s, m) for m in metrics]])
    return header, body


def _method_lines(metrics: Sequence[str], notes: Sequence[str]) -> list[str]:
    versions = metric_versions()
    lines = ["Means over clips ± 95% confidence half-width (Student t); (n=k): the metric is defined on "
             "only k clips (PESQ cannot score silence, STOI needs about 0.4 s of speech, ViSQOL a clip long "
             "enough for its patches). Actual kbps: bytes stored "
             "(token file, Ogg Opus file, Codec2 file) × 8 / duration; AE: float width; VAE: KL rate "
             "(see docs/benchmark.md).",
             "Metrics: " + "; ".join(f"{METRICS[m].label}: {versions[m]}" for m in metrics) + "."]
    return lines + [f"Note: {note}." for note in notes]


def _markdown_table(summary: list[dict], metrics: Sequence[str]) -> list[str]:
    header, body = _table(summary, metrics)
    aligns = ["---", "---", "--:", "--:", "--:", *["--:"] * len(metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in body]


def summary_markdown(summary: list[dict], metrics: Sequence[str], notes: Sequence[str] = (),
                     groups: Sequence[tuple[str, str, list[dict]]] = ()) -> str:
    """The summary table, then one per group of :func:`group_summaries` (a heading each)."""
    lines = ["# Bitrate vs quality", "", *_method_lines(metrics, notes), "", *_markdown_table(summary, metrics)]
    for column, value, members in groups:
        lines += ["", f"## {column} {value or '(none)'}", "", *_markdown_table(members, metrics)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- plots
def _curves(summary: list[dict]) -> dict[str, list[dict]]:
    curves: dict[str, list[dict]] = {}
    for entry in summary:
        curves.setdefault(entry["curve"], []).append(entry)
    return {name: sorted(points, key=lambda p: p["order"]) for name, points in curves.items()}


def _legend(point: dict) -> str:
    """"smoke (RVQ)" for a model's curve, "Opus" for a classic codec."""
    family = point["family"]
    return point["curve"] if family in ("opus", "codec2") else f"{point['curve']} ({family.upper()})"


def plot_metric(summary: list[dict], metric: str):
    """A matplotlib Figure: ``metric`` against actual kbps, one line per model / classic codec."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogFormatter

    fig = Figure(figsize=(7.5, 4.8), dpi=100)
    ax = fig.subplots()
    for name, points in _curves(summary).items():
        points = [p for p in points if math.isfinite(p[metric]) and p["actual_kbps"] > 0]
        if not points:
            continue
        x = [p["actual_kbps"] for p in points]
        y = [p[metric] for p in points]
        err = [p[f"{metric}_ci95"] if math.isfinite(p[f"{metric}_ci95"]) else 0.0 for p in points]
        ax.errorbar(x, y, yerr=err, marker="o", markersize=4, capsize=3, linewidth=1.4, label=_legend(points[0]))
        for p, xi, yi in zip(points, x, y):
            ax.annotate(p["setting"].removeprefix("n_q="), (xi, yi), textcoords="offset points",
                        xytext=(4, 4), fontsize=7, alpha=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))
    ax.set_xlabel("actual bitrate (kbps, log scale)")
    ax.set_ylabel(METRICS[metric].label)
    ax.set_title(f"{METRICS[metric].label} vs bitrate ({'higher' if METRICS[metric].higher_is_better else 'lower'}"
                 " is better)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_plots(out: Path, summary: list[dict], metrics: Sequence[str]) -> list[str]:
    """plots/<metric>.png for every metric with at least one value; -> their paths relative to out.

    None without matplotlib (the caller notes it)."""
    if not have_matplotlib():
        return []
    (out / "plots").mkdir(parents=True, exist_ok=True)
    written = []
    for metric in metrics:
        if not any(math.isfinite(s[metric]) for s in summary):
            continue
        fig = plot_metric(summary, metric)
        rel = f"plots/{metric}.png"
        atomic_write(out / rel, lambda tmp: fig.savefig(tmp, format="png"))
        written.append(rel)
    return written


# ---------------------------------------------------------------------------- HTML
_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, td.text { text-align: left; }
th { background: #f2f2f2; }
tr.reference td { background: #f8f8e8; }
.plots { display: flex; flex-wrap: wrap; gap: 8px; }
.plots figure { margin: 0; }
.plots img { width: 560px; max-width: 100%; border: 1px solid #ddd; }
audio { height: 28px; width: 240px; }
.notes { color: #555; }
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _audio_tag(rel: str) -> str:
    return f'<audio controls preload="none" src="{_esc(quote(rel))}"></audio>'


def _html_table(header: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def _clip_section(clip: str, members: list[dict], metrics: Sequence[str]) -> str:
    first = members[0]
    header = ["system", "setting", "actual kbps", *map(_header_label, metrics), "listen"]
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    span = len(header) - 2
    rows = [f'<tr class="reference"><td>reference</td><td class="text" colspan="{span}">the clip as scored '
            f'(mono, {first["sample_rate"]} Hz)</td><td>{_audio_tag(audio_path(clip, REFERENCE))}</td></tr>']
    for r in members:
        cells = [_legend(r), r["setting"], format_mean_ci(r["actual_kbps"], math.nan, 2),
                 *[format_mean_ci(r[m] if r.get(m) is not None else math.nan, math.nan, DIGITS[m]) for m in metrics]]
        rows.append("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in cells) + f"<td>{_audio_tag(r['audio'])}</td></tr>")
    title = f"{clip} ({first['kind']}, {first['duration_s']:.2f} s)"
    return (f'<section id="clip-{_esc(clip)}"><h3>{_esc(title)}</h3>'
            f"<table><tr>{head}</tr>{''.join(rows)}</table></section>")


def report_html(rows: list[dict], summary: list[dict], metrics: Sequence[str], plots: Sequence[str],
                notes: Sequence[str] = ()) -> str:
    """A self-contained page; its plots and audio are files next to it (plots/, audio/)."""
    clips: dict[str, list[dict]] = {}
    for row in rows:
        clips.setdefault(row["clip"], []).append(row)
    figures = "".join(f'<figure><img src="{_esc(quote(p))}" alt="{_esc(Path(p).stem)} vs bitrate"></figure>'
                      for p in plots)
    method = "".join(f"<li>{_esc(line)}</li>" for line in _method_lines(metrics, notes))
    sections = "".join(_clip_section(clip, members, metrics) for clip, members in clips.items())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Codec benchmark: bitrate vs quality</title><style>{_STYLE}</style></head><body>"
            f"<h1>Bitrate vs quality</h1><p>{len(clips)} clips, {len(summary)} systems.</p>"
            f'<ul class="notes">{method}</ul>'
            f'<h2>Rate-distortion</h2><div class="plots">{figures}</div>'
            f"<h2>Summary</h2>{_html_table(*_table(summary, metrics))}"
            f"<h2>Listening, clip by clip</h2>{sections}</body></html>\n")


# ---------------------------------------------------------------------------- everything
def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_outputs(out: str | Path, rows: list[dict], metrics: Sequence[str], notes: Sequence[str] = ()) -> list[dict]:
    """Write results.csv, summary.csv, summary.md, plots/*.png and report.html; -> the summary."""
    out = Path(out)
    summary = summarize(rows, metrics)
    groups = group_summaries(rows, metrics)
    _write_text(out / "results.csv", csv_text(rows, ROW_COLUMNS))
    _write_text(out / "summary.csv", csv_text(summary, summary_columns(metrics)))
    _write_text(out / "summary.md", summary_markdown(summary, metrics, notes, groups))
    group_rows = [{"group": column, "value": value, **entry} for column, value, members in groups for entry in members]
    if groups:
        _write_text(out / "groups.csv", csv_text(group_rows, ["group", "value", *summary_columns(metrics)]))
    else:
        (out / "groups.csv").unlink(missing_ok=True)      # left by an earlier run over other clips
    plots = write_plots(out, summary, metrics)
    _write_text(out / "report.html", report_html(rows, summary, metrics, plots, notes))
    return summary
