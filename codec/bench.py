"""Bitrate-vs-quality benchmark: codec models, the AE/VAE baselines and classic codecs on one chart.

    codec bench --audio DIR --models [LABEL=]NAME_OR_PATH... [--opus 6,8,12,16,24] [--codec2 700C,1600,3200]
                --out DIR [--jobs N] [--max-clips N] [--kind auto|speech|music] [--metrics LIST]
                [--split NAME] [--max-per-speaker N]
    python -m codec.bench ...                      (the same, without the ``codec`` front end)

Every clip (mono: channels are averaged) goes through every *system*: each model at every n_q
from 1 to its maximum (AE and VAE baselines once, at their own rate), Opus at each bitrate and
Codec2 in each mode (speech clips only) when their tools are installed. The decoded audio is
scored against the clip with ``codec.metrics`` and the rate actually stored is measured:
the bytes of the token file (``encode_token_bytes``) or of the classic codec's file, over the
clip's duration. Results are cached per (clip, system) in OUT/cache/, so an interrupted run,
started again with the same arguments, computes only what is missing; then ``codec.report``
writes results.csv, summary.csv, summary.md, plots/*.png and report.html (with a manifest whose
clips span several splits or speakers, summary.md and groups.csv also give each one). See
docs/benchmark.md for the method and the formulas.

Library use::

    from codec.bench import BenchConfig, run_bench
    result = run_bench(BenchConfig(audio="clips", out="bench", models=["speech16k"]))
    result.rows      # one dict per (clip, system): rates, metrics, decoded audio path
    result.summary   # one dict per system: means with 95% confidence intervals
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import math
import multiprocessing
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from codec import classic, report
from codec.audio import AudioError, ClippingWarning, load_audio, resample, save_audio, to_mono
from codec.checkpoint import CheckpointError
from codec.data import audio_files
from codec.fileio import atomic_write
from codec.metrics import METRICS, available_metrics, check_level_dbov, compute_metrics, metric_versions
from codec.model import Codec, CodecConfig
from codec.tokenfile import FORMAT_VERSION as TOKEN_FORMAT_VERSION, encode_token_bytes

BENCH_VERSION = 2                  # bump when a change makes cached results stale (2: STOI NaN on short clips)
DEFAULT_OPUS_KBPS = (6.0, 8.0, 12.0, 16.0, 24.0)
DEFAULT_CODEC2_MODES = ("700C", "1600", "3200")
MARKER = "bench.json"              # written into every output folder: marks it as a benchmark's
VISQOL_LEVEL_METHOD = "P.56 method B, 1"   # change when active_speech_level_dbov changes: cache key


class BenchError(ValueError):
    """A benchmark that cannot run as asked (no clips, a bad option, a foreign output folder)."""


@dataclass(frozen=True)
class Clip:
    id: str          # file-safe, unique: names its cache and audio folders
    path: str
    kind: str        # "speech" or "music"
    digest: str      # content hash: a changed file invalidates its cached results
    split: str = ""  # a manifest's "split" and "speaker" ("" without one): the report's groups
    speaker: str = ""


@dataclass(frozen=True)
class System:
    """One codec at one setting: a point on the rate-distortion plots."""

    id: str                      # file-safe, unique: "smoke-nq2", "opus-12kbps", "codec2-3200"
    curve: str                   # the line it belongs to on the plots: "smoke", "Opus", "Codec2"
    family: str                  # "rvq", "vq", "ae", "vae", "opus" or "codec2"
    setting: str                 # "n_q=2", "12 kbps", "3200", ...
    order: float                 # sorts the points of one curve
    nominal_kbps: float | None   # None for a VAE: its rate is measured per clip
    model: str | None = None     # name or path, for model systems
    n_q: int | None = None
    version: str = ""            # model fingerprint or tool version (part of the cache key)
    speech_only: bool = False


@dataclass
class BenchConfig:
    audio: str | Path                                   # folder (recursive), manifest CSV, or one file
    out: str | Path
    models: Sequence[str] = ()
    opus_kbps: Sequence[float] = DEFAULT_OPUS_KBPS
    codec2_modes: Sequence[str] = DEFAULT_CODEC2_MODES
    jobs: int = 1
    max_clips: int | None = None
    kind: str = "auto"                                  # "auto", "speech" or "music"
    split: str | None = None                            # manifest split to keep ("test"); None: all
    max_per_speaker: int | None = None                  # with a manifest: the first n clips of each speaker
    metrics: Sequence[str] | None = None                # default: every available metric
    visqol_level: float | None = None                   # dBov active level to score ViSQOL at; None: as recorded
    force: bool = False                                 # use a non-empty folder that is not a benchmark's
    progress: bool = True


@dataclass
class BenchResult:
    rows: list[dict]
    summary: list[dict]
    computed: int                 # (clip, system) pairs run now
    cached: int                   # ... and taken from OUT/cache
    notes: list[str] = field(default_factory=list)
    out: Path = Path(".")


# ---------------------------------------------------------------------------- clips
def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _guess_kind(rel: Path) -> str:
    return "music" if any("music" in part.lower() for part in rel.parts) else "speech"


@dataclass(frozen=True)
class _Entry:
    path: Path
    kind: str | None = None      # from a manifest, else guessed from the path
    split: str = ""
    speaker: str = ""


def _manifest_entries(manifest: Path, split: str | None) -> list[_Entry]:
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "path" not in rows[0]:
        raise BenchError(f"{manifest} has no 'path' column")
    return [_Entry(manifest.parent / row["path"], row.get("kind") or None, row.get("split") or "",
                   row.get("speaker") or "")
            for row in rows if split is None or row.get("split") == split]


def _audio_entries(root: Path, split: str | None) -> tuple[Path, list[_Entry]]:
    """(folder the ids are relative to, the files with what a manifest says of them)."""
    if not root.exists():
        raise BenchError(f"no such audio file or folder: {root}")
    if root.is_file() and root.suffix.lower() == ".csv":
        return root.parent, _manifest_entries(root, split)
    if root.is_file():
        return root.parent, [_Entry(root)]
    if (root / "manifest.csv").is_file():
        return root, _manifest_entries(root / "manifest.csv", split)
    if split is not None:
        raise BenchError(f"--split needs a manifest.csv in {root}")
    return root, [_Entry(p) for p in audio_files(root)]


def _first_per_speaker(entries: list[_Entry], n: int) -> list[_Entry]:
    """The first ``n`` entries of each speaker, in their order (files without a speaker: one group)."""
    seen: dict[str, int] = {}
    kept = []
    for entry in entries:
        seen[entry.speaker] = seen.get(entry.speaker, 0) + 1
        if seen[entry.speaker] <= n:
            kept.append(entry)
    return kept


def find_clips(audio: str | Path, kind: str = "auto", max_clips: int | None = None,
               split: str | None = None, max_per_speaker: int | None = None) -> list[Clip]:
    """The clips under ``audio`` in sorted order (the first ``max_per_speaker`` of each speaker a
    manifest names, then the first ``max_clips``), each with its kind, split and speaker.

    kind "auto": a manifest's ``kind`` column, else "music" for paths with "music" in a folder
    or file name, else "speech".
    """
    if kind not in ("auto", "speech", "music"):
        raise BenchError(f"kind must be auto, speech or music, got {kind!r}")
    root, entries = _audio_entries(Path(audio), split)
    if max_per_speaker is not None:
        entries = _first_per_speaker(entries, max_per_speaker)
    entries = entries[:max_clips] if max_clips is not None else entries
    if not entries:
        raise BenchError(f"no audio files found in {audio}")
    clips, used = [], set()
    for entry in entries:
        path, listed_kind = entry.path, entry.kind
        rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
        clip_id = _safe_name("__".join(rel.with_suffix("").parts))
        if clip_id in used:                         # "a.wav" and "a.flac": keep the suffix
            clip_id = _safe_name("__".join(rel.parts))
        while clip_id in used:
            clip_id += "_"
        used.add(clip_id)
        clip_kind = kind if kind != "auto" else (listed_kind or _guess_kind(rel))
        if clip_kind not in ("speech", "music"):
            raise BenchError(f"{path}: kind must be speech or music, got {clip_kind!r}")
        if not path.is_file():
            raise BenchError(f"no such audio file: {path}")
        clips.append(Clip(clip_id, str(path.resolve()), clip_kind, _file_digest(path), entry.split, entry.speaker))
    return clips


def load_mono(path: Path) -> tuple[np.ndarray, int]:
    """An audio file as the benchmark scores it: mono (T,) float64 at its own rate."""
    wav, sample_rate = load_audio(path)
    return to_mono(wav)[0].double().numpy(), sample_rate


def load_reference(clip: Clip) -> tuple[np.ndarray, int]:
    """The clip as the benchmark scores it: mono (T,) float64 at its own rate."""
    return load_mono(clip.path)


# ---------------------------------------------------------------------------- systems
def _load_model(spec: str) -> Codec:
    from codec import load
    model = load(spec).eval()
    if model.channels != 1:
        raise BenchError(f"model {spec!r} has {model.channels} channels; the benchmark runs mono models")
    return model


_MODELS: dict[str, Codec] = {}       # per process: each worker loads a model once


def _cached_model(spec: str) -> Codec:
    if spec not in _MODELS:
        _MODELS[spec] = _load_model(spec)
    return _MODELS[spec]


def model_systems(spec: str, label: str | None = None) -> list[System]:
    """The systems of one model: every n_q from 1 to its maximum, or its one AE/VAE point."""
    model = _cached_model(spec)
    default_name = model.config.name in ("", CodecConfig.name)   # "codec": say which one by its path
    label = _safe_name(label or (Path(spec).name if default_name else model.config.name))
    family, fingerprint = model.config.bottleneck, model.fingerprint()
    common = dict(curve=label, family=family, model=spec, version=fingerprint)
    if family == "ae":
        return [System(f"{label}-ae", setting=f"float{model.config.ae_float_bits} latent", order=0,
                       nominal_kbps=model.bitrate() / 1000, **common)]
    if family == "vae":
        return [System(f"{label}-vae", setting="KL rate", order=0, nominal_kbps=None, **common)]
    common["version"] += f"+tokens-v{TOKEN_FORMAT_VERSION}"   # its rate is a token file's size
    return [System(f"{label}-nq{q}", setting=f"n_q={q}", order=q, nominal_kbps=model.bitrate(q) / 1000,
                   n_q=q, **common) for q in range(1, model.n_q + 1)]


def classic_systems(opus_kbps: Sequence[float], codec2_modes: Sequence[str], notes: list[str]) -> list[System]:
    """Opus and Codec2 systems whose tools are installed; a note in ``notes`` for each skipped codec."""
    systems = []
    for name, tools, settings, package in (("Opus", classic.OPUS_TOOLS, opus_kbps, "opus-tools"),
                                           ("Codec2", classic.CODEC2_TOOLS, codec2_modes, "codec2")):
        if not settings:
            continue
        missing = classic.missing_tools(tools)
        if missing:
            notes.append(f"{name} skipped: {', '.join(missing)} not found (install Debian's {package})")
            continue
        version = classic.tool_version(tools[0])
        if name == "Opus":
            systems += [System(f"opus-{kbps:g}kbps", "Opus", "opus", f"{kbps:g} kbps", kbps, kbps,
                               version=version) for kbps in sorted(opus_kbps)]
        else:
            modes = sorted(codec2_modes, key=lambda m: classic.CODEC2_MODES[m])
            systems += [System(f"codec2-{mode}", "Codec2", "codec2", mode, classic.CODEC2_MODES[mode],
                               classic.CODEC2_MODES[mode] / 1000, version=version, speech_only=True)
                        for mode in modes]
    return systems


def split_label(spec: str) -> tuple[str | None, str]:
    """"LABEL=NAME_OR_PATH" -> (LABEL, NAME_OR_PATH); a spec without "=" (or an existing path) -> (None, spec)."""
    label, sep, rest = spec.partition("=")
    if not sep or Path(spec).exists():
        return None, spec
    if not label or not rest:
        raise BenchError(f"--models {spec!r}: expected LABEL=NAME_OR_PATH")
    return label, rest


def all_systems(models: Sequence[str], opus_kbps: Sequence[float], codec2_modes: Sequence[str],
                notes: list[str]) -> list[System]:
    """Models first (labels made unique), then the classic codecs."""
    systems: list[System] = []
    labels: set[str] = set()
    for spec in models:
        label, spec = split_label(spec)
        first = model_systems(spec, label)
        label = first[0].curve
        if label in labels:              # two models with one name: number the later ones
            label = next(f"{label}-{i}" for i in range(2, len(models) + 2) if f"{label}-{i}" not in labels)
            first = model_systems(spec, label)
        labels.add(label)
        systems += first
    return systems + classic_systems(opus_kbps, codec2_modes, notes)


# ---------------------------------------------------------------------------- running one system
@dataclass
class Decoded:
    audio: np.ndarray          # (T,) float64 at the clip's rate and length
    actual_bps: float          # what was stored, bits per second
    nominal_bps: float
    rate_source: str           # what "actual" measures
    num_bytes: int | None = None
    lag: int | None = None     # classic codecs: measured (and compensated) delay, samples


def token_file_bytes(model: Codec, name: str, codes: torch.Tensor, sample_rate: int, num_samples: int) -> bytes:
    """The bytes ``codec encode`` would write for codes (C, n_q, F): entropy-coded when the
    model has symbol statistics, bit-packed otherwise."""
    from codec.api import token_header
    header, probs = token_header(model, name, codes, sample_rate, num_samples)
    return encode_token_bytes(header, codes.cpu().numpy(), probs)


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    return np.pad(x[:length], (0, max(0, length - len(x))))


@torch.no_grad()
def run_model(system: System, ref: np.ndarray, sample_rate: int) -> Decoded:
    """Encode and decode ``ref`` (T,) with the system's model, at the model's rate and back."""
    model = _cached_model(system.model)
    duration = len(ref) / sample_rate
    wav = resample(torch.as_tensor(ref, dtype=torch.float32).reshape(1, 1, -1), sample_rate, model.sample_rate)
    latent = model.encode(wav, system.n_q) if model.is_quantized else model.encode(wav)
    audio = model.decode(latent)                                           # (1, 1, T_model)
    if model.is_quantized:
        nominal = model.bitrate(system.n_q)
        num_bytes = len(token_file_bytes(model, system.model, latent, sample_rate, len(ref)))  # latent: (C=1, n_q, F)
        actual, source = num_bytes * 8 / duration, "token file"
    elif system.family == "ae":
        nominal = actual = model.bitrate()
        num_bytes, source = None, "float width"
    else:                                                                  # VAE: KL / ln 2 per frame
        nominal = actual = float(model(wav).bits_per_frame) * model.frame_rate
        num_bytes, source = None, "KL rate"
    out = resample(audio[0, 0].double(), model.sample_rate, sample_rate).numpy()
    return Decoded(_fit(out, len(ref)), actual, nominal, source, num_bytes)


def run_classic(system: System, ref: np.ndarray, sample_rate: int) -> Decoded:
    """Opus or Codec2 round trip of ``ref`` (T,); Opus's alignment must verify (zero residual lag)."""
    if system.family == "opus":
        done = classic.opus_roundtrip(ref, sample_rate, system.nominal_kbps)
        source = "Ogg Opus file"
        if done.residual_lag != 0:
            raise classic.ClassicCodecError(f"{system.id}: output still {done.residual_lag} samples off "
                                            "after alignment")
    else:                       # Codec2: aligned on envelopes, approximately; nothing exact to verify
        done = classic.codec2_roundtrip(ref, sample_rate, system.setting)
        source = "Codec2 file"
    actual = done.num_bytes * 8 / (len(ref) / sample_rate)
    return Decoded(done.audio, actual, system.nominal_kbps * 1000, source, done.num_bytes, done.lag)


# ---------------------------------------------------------------------------- one task, cached
@dataclass(frozen=True)
class Task:
    clip: Clip
    system: System
    out: str
    metrics: tuple[str, ...]
    visqol_level: float | None = None

    @property
    def cache_path(self) -> Path:
        return Path(self.out) / "cache" / self.clip.id / f"{self.system.id}.json"

    @property
    def audio_rel(self) -> str:
        return report.audio_path(self.clip.id, self.system.id)

    def key(self) -> dict:
        """What the cached result depends on: a result with another key is computed again."""
        versions = metric_versions()
        key = {"bench": BENCH_VERSION, "clip": self.clip.digest, "system": dataclasses.asdict(self.system),
               "metrics": {name: versions[name] for name in self.metrics}}
        if self.visqol_level is not None and "visqol" in self.metrics:   # absent: results cached before the option
            key["visqol_level"] = {"dbov": self.visqol_level, "method": VISQOL_LEVEL_METHOD}
        return key


def _clean(value):
    """NaN -> None, numpy scalars -> Python numbers, for JSON and CSV."""
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value


def cached_row(task: Task) -> dict | None:
    """The task's cached row, if its key matches and its decoded audio is still there."""
    try:
        entry = json.loads(task.cache_path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or entry.get("key") != json.loads(json.dumps(task.key())):
        return None
    if not (Path(task.out) / task.audio_rel).is_file():
        return None
    return entry.get("row")


def evaluate(task: Task) -> dict:
    """Run one system on one clip, score it, save the decoded audio and the cache entry; -> row."""
    clip, system = task.clip, task.system
    ref, sample_rate = load_reference(clip)
    runner = run_model if system.model is not None else run_classic
    decoded = runner(system, ref, sample_rate)
    try:
        scores = compute_metrics(ref, decoded.audio, sample_rate, clip.kind, task.metrics, task.visqol_level)
    except (ValueError, IndexError, RuntimeError) as err:   # a metric package failing on this clip
        raise BenchError(f"{clip.path}, {system.id}: a metric failed: {type(err).__name__}: {err}") from None
    with warnings.catch_warnings():             # clipping is part of what is measured
        warnings.simplefilter("ignore", ClippingWarning)
        save_audio(Path(task.out) / task.audio_rel, torch.as_tensor(decoded.audio).float(), sample_rate)
    row = {"clip": clip.id, "kind": clip.kind, "duration_s": len(ref) / sample_rate, "sample_rate": sample_rate,
           "system": system.id, "curve": system.curve, "family": system.family, "setting": system.setting,
           "order": system.order, "n_q": system.n_q, "nominal_kbps": decoded.nominal_bps / 1000,
           "actual_kbps": decoded.actual_bps / 1000, "rate_source": decoded.rate_source,
           "bytes": decoded.num_bytes, "lag_samples": decoded.lag,
           **{name: scores.get(name) for name in METRICS}, "audio": task.audio_rel}
    row = {k: _clean(v) for k, v in row.items()}
    text = json.dumps({"key": task.key(), "row": row}, indent=1)
    task.cache_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(task.cache_path, lambda tmp: Path(tmp).write_text(text))
    return row


def _init_worker() -> None:
    torch.set_num_threads(1)          # the workers share the cores; one thread each


# ---------------------------------------------------------------------------- the whole run
def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file() and not force:
        raise BenchError(f"{out} is not empty and holds no earlier benchmark ({MARKER}); "
                         "pick an empty folder or pass --force")
    out.mkdir(parents=True, exist_ok=True)
    for folder in ("cache", "audio"):                   # temporaries of a run that was killed
        for stale in (out / folder).glob("*/.*.tmp*"):
            stale.unlink(missing_ok=True)


def _write_marker(out: Path, config: BenchConfig, clips: list[Clip], systems: list[System],
                  metrics: list[str], notes: list[str]) -> None:
    versions = metric_versions()
    info = {"bench_version": BENCH_VERSION, "audio": str(config.audio), "models": list(config.models),
            "clips": [c.id for c in clips], "systems": [s.id for s in systems],
            "metrics": {m: versions[m] for m in metrics}, "visqol_level_dbov": config.visqol_level,
            "notes": notes}
    text = json.dumps(info, indent=1)
    atomic_write(out / MARKER, lambda tmp: Path(tmp).write_text(text))


def _check_metrics(names: Sequence[str] | None, notes: list[str]) -> list[str]:
    available = available_metrics()
    for name, version in metric_versions().items():
        if version is None:
            notes.append(f"{METRICS[name].label} not computed: pip install {METRICS[name].package}")
    if names is None:
        return available
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise BenchError(f"unknown metrics: {', '.join(unknown)} (known: {', '.join(METRICS)})")
    missing = [n for n in names if n not in available]
    if missing:
        raise BenchError(f"metrics not installed here: {', '.join(missing)} (pip install 'rvqcodec[bench]')")
    return list(names)


def _note_slow_visqol(metrics: Sequence[str], notes: list[str]) -> None:
    """Without numba, visqol-python runs its frame and patch loops in Python: the same scores,
    measured 11 times slower on a 6 s clip and 22 times on a 22 s one (76 s against 3.5)."""
    if "visqol" not in metrics:
        return
    from visqol.numba_accel import has_numba
    if not has_numba():
        notes.append("ViSQOL runs without numba, 10 to 20 times slower: pip install 'visqol-python[accel]'")


def _tasks(clips: list[Clip], systems: list[System], out: Path, metrics: list[str],
           visqol_level: float | None = None) -> list[Task]:
    return [Task(clip, system, str(out), tuple(metrics), visqol_level) for clip in clips for system in systems
            if clip.kind == "speech" or not system.speech_only]


def _save_references(clips: list[Clip], out: Path) -> None:
    for clip in clips:
        path = out / report.audio_path(clip.id, report.REFERENCE)
        path.parent.mkdir(parents=True, exist_ok=True)
        ref, sample_rate = load_reference(clip)
        with warnings.catch_warnings():             # clipping is part of what is measured
            warnings.simplefilter("ignore", ClippingWarning)
            save_audio(path, torch.as_tensor(ref).float(), sample_rate)


def _compute(todo: list[Task], jobs: int, bar: tqdm) -> list[dict]:
    rows = []
    if jobs <= 1 or len(todo) <= 1:
        for task in todo:
            rows.append(evaluate(task))
            bar.update()
        return rows
    with multiprocessing.get_context("spawn").Pool(min(jobs, len(todo)), initializer=_init_worker) as pool:
        for row in pool.imap_unordered(evaluate, todo):
            rows.append(row)
            bar.update()
    return rows


def run_bench(config: BenchConfig) -> BenchResult:
    """Run (or resume) a benchmark and write every output into ``config.out``."""
    out = Path(config.out)
    if config.jobs < 1:
        raise BenchError(f"--jobs must be at least 1, got {config.jobs}")
    notes: list[str] = []
    _MODELS.clear()                          # models may have changed on disk since an earlier run
    metrics = _check_metrics(config.metrics, notes)
    _note_slow_visqol(metrics, notes)
    if config.visqol_level is not None:
        try:
            check_level_dbov(config.visqol_level)
        except ValueError as err:
            raise BenchError(str(err)) from None
        if "visqol" in metrics:
            notes.append(f"ViSQOL scored with each reference and its decoded audio scaled together to "
                         f"{config.visqol_level:g} dBov active speech level (ITU-T P.56 method B)")
        else:
            notes.append("--visqol-level has no effect: ViSQOL is not among the metrics")
    clips = find_clips(config.audio, config.kind, config.max_clips, config.split, config.max_per_speaker)
    systems = all_systems(config.models, config.opus_kbps, config.codec2_modes, notes)
    if not systems:
        raise BenchError("nothing to compare: give --models, or install opus-tools / codec2")
    if not report.have_matplotlib():
        notes.append("no plots: pip install matplotlib")
    if any(s.speech_only for s in systems) and any(c.kind == "music" for c in clips):
        notes.append("Codec2 runs on speech clips only")
    _prepare_out(out, config.force)
    _write_marker(out, config, clips, systems, metrics, notes)
    _save_references(clips, out)
    tasks = _tasks(clips, systems, out, metrics, config.visqol_level)
    cached = {task: cached_row(task) for task in tasks}
    todo = [task for task, row in cached.items() if row is None]
    if config.progress:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
    with tqdm(total=len(tasks), initial=len(tasks) - len(todo), desc="bench", unit="run",
              disable=not config.progress, file=sys.stderr) as bar:
        fresh = _compute(todo, config.jobs, bar)
    rows = [row for row in cached.values() if row is not None] + fresh
    by_id = {clip.id: clip for clip in clips}
    for row in rows:                  # not part of a cached result: a manifest may regroup its clips
        row["split"], row["speaker"] = by_id[row["clip"]].split, by_id[row["clip"]].speaker
    order = {s.id: i for i, s in enumerate(systems)}
    rows.sort(key=lambda r: (r["clip"], order[r["system"]]))
    summary = report.write_outputs(out, rows, metrics, notes)
    return BenchResult(rows, summary, computed=len(todo), cached=len(tasks) - len(todo), notes=notes, out=out)


# ---------------------------------------------------------------------------- command line
def _kbps_list(text: str) -> list[float]:
    if text.strip().lower() in ("", "none"):
        return []
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated kbps such as 6,12, got {text!r}") from None
    if not all(6 <= v <= 510 for v in values):
        raise argparse.ArgumentTypeError(f"Opus bitrates must lie in [6, 510] kbps, got {text!r}")
    return values


def _codec2_list(text: str) -> list[str]:
    if text.strip().lower() in ("", "none"):
        return []
    modes = [part.strip().upper() for part in text.split(",")]
    unknown = [m for m in modes if m not in classic.CODEC2_MODES]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown Codec2 modes {unknown}; modes: {', '.join(classic.CODEC2_MODES)}")
    return modes


def _metric_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (the benchmark's tools use it too)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


_kbps_list.__name__, _codec2_list.__name__, positive_int.__name__ = "kbps list", "Codec2 modes", "positive integer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``codec bench`` options on ``parser`` (a subparser of the ``codec`` command)."""
    parser.add_argument("--audio", required=True, metavar="DIR",
                        help="clips: a folder (searched recursively), a manifest CSV, or one file")
    parser.add_argument("--models", nargs="*", default=[], metavar="NAME_OR_PATH",
                        help="bundled model names or model directories, optionally labelled as "
                             "LABEL=NAME_OR_PATH (every n_q of each is run)")
    parser.add_argument("--opus", type=_kbps_list, default=list(DEFAULT_OPUS_KBPS), metavar="KBPS,...",
                        help="Opus bitrates (default: 6,8,12,16,24; 'none' to skip)")
    parser.add_argument("--codec2", type=_codec2_list, default=list(DEFAULT_CODEC2_MODES), metavar="MODE,...",
                        help="Codec2 modes for speech clips (default: 700C,1600,3200; 'none' to skip)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder; running again into it resumes from its cache")
    parser.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="parallel processes (default: 1)")
    parser.add_argument("--max-clips", type=positive_int, metavar="N", help="use only the first N clips")
    parser.add_argument("--kind", choices=("auto", "speech", "music"), default="auto",
                        help="what the clips are (default: a manifest's kind column, else 'music' "
                             "for paths that say so, else speech)")
    parser.add_argument("--split", help="with a manifest: only the clips of this split (e.g. test)")
    parser.add_argument("--max-per-speaker", type=positive_int, metavar="N",
                        help="with a manifest: only the first N clips of each speaker")
    parser.add_argument("--metrics", type=_metric_list, metavar="NAME,...",
                        help=f"metrics to compute (default: every installed one of {','.join(METRICS)})")
    parser.add_argument("--visqol-level", type=float, metavar="DBOV",
                        help="score ViSQOL with each reference and its decoded audio scaled together to this "
                             "active speech level, e.g. -26 (default: as recorded; ViSQOL's scores depend on it)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder that is not a benchmark's")


def run(args: argparse.Namespace) -> int:
    """Run ``codec bench`` from parsed arguments; returns the exit code. Errors: one line on stderr."""
    config = BenchConfig(audio=args.audio, out=args.out, models=args.models, opus_kbps=args.opus,
                         codec2_modes=args.codec2, jobs=args.jobs, max_clips=args.max_clips, kind=args.kind,
                         split=args.split, max_per_speaker=args.max_per_speaker, metrics=args.metrics, visqol_level=args.visqol_level, force=args.force,
                         progress=not getattr(args, "quiet", False))
    try:
        result = run_bench(config)
    except KeyboardInterrupt:
        print("codec: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (BenchError, CheckpointError, AudioError, classic.ClassicCodecError, OSError, ValueError) as err:
        print(f"codec: error: {err}", file=sys.stderr)
        return 1
    if not getattr(args, "quiet", False):
        print(f"{len(result.rows)} results ({result.computed} computed, {result.cached} cached) "
              f"-> {result.out / 'report.html'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codec.bench", description=__doc__.split("\n")[0])
    add_arguments(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary line")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
