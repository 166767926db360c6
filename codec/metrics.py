"""Quality metrics for the benchmark: one reference and one decoded signal -> one number each.

Every function takes 1-D float arrays ``ref`` and ``est`` of the same length at ``sample_rate``
(mono; the benchmark downmixes first) and returns a float, NaN when the metric is undefined
for the input (PESQ finds no speech in silence, STOI needs about 0.4 s of speech, for instance).

=========  ====================================================  ==========  =============
name       what                                                  better      needs
=========  ====================================================  ==========  =============
pesq       PESQ wide-band (ITU-T P.862.2) MOS-LQO, at 16 kHz     higher      ``pesq``
stoi       short-time objective intelligibility (0..1)           higher      ``pystoi``
visqol     ViSQOL v3 MOS-LQO: speech mode at 16 kHz, audio       higher      ``visqol-python``
           mode at 48 kHz; the package's bundled models
si_sdr     scale-invariant SDR, dB                               higher      (built in)
log_mel    multi-scale log-mel L1 distance                       lower       (built in)
mrstft     multi-resolution STFT distance                        lower       (built in)
=========  ====================================================  ==========  =============

PESQ and STOI are speech metrics: :func:`compute_metrics` leaves them out for music. The last
three reuse ``codec.losses`` (formulas in its docstring and in docs/benchmark.md), so the
benchmark and the training validation measure the same thing.

ViSQOL's speech mode maps similarity to MOS with the package's bundled lattice model when
``ai-edge-litert`` is installed (``pip install 'visqol-python[lattice]'``, as C++ ViSQOL does by
default) and with its polynomial mapping otherwise; :func:`metric_versions` says which. With
``numba`` (``visqol-python[accel]``) its loops are compiled: the same scores, 11 to 22 times faster
on clips of 6 to 22 s. ViSQOL's score depends on how loud the pair is (it floors its spectrograms
at an absolute -45 dB); ``visqol_score(..., level_dbov=-26)`` scores both at one set active
speech level (:func:`active_speech_level_dbov`, ITU-T P.56).
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from codec.audio import resample
from codec.losses import MultiResolutionSTFT, MultiScaleMel, si_sdr

KINDS = ("speech", "music")


@dataclass(frozen=True)
class Metric:
    name: str
    label: str                  # for tables and plot axes
    higher_is_better: bool
    speech_only: bool = False
    package: str | None = None  # PyPI distribution it needs, None when built in
    module: str | None = None   # ... and the module it imports


METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("pesq", "PESQ (WB)", True, speech_only=True, package="pesq", module="pesq"),
    Metric("stoi", "STOI", True, speech_only=True, package="pystoi", module="pystoi"),
    Metric("visqol", "ViSQOL", True, package="visqol-python", module="visqol"),
    Metric("si_sdr", "SI-SDR (dB)", True),
    Metric("log_mel", "log-mel distance", False),
    Metric("mrstft", "MR-STFT distance", False),
)}


# ---------------------------------------------------------------------------- availability
def _installed_version(metric: Metric) -> str | None:
    """The package's version when its module imports, else None."""
    try:
        importlib.import_module(metric.module)
    except ImportError:
        return None
    try:
        return importlib.metadata.version(metric.package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _lattice_runtime() -> bool:
    try:
        from visqol.quality_mapper import has_lattice_runtime
    except ImportError:
        return False
    return bool(has_lattice_runtime())


@functools.cache
def metric_versions() -> dict[str, str | None]:
    """Metric name -> what computes it ("pesq 0.0.4", ...), or None when its package is missing."""
    versions: dict[str, str | None] = {}
    for metric in METRICS.values():
        if metric.package is None:
            versions[metric.name] = "codec.losses"
            continue
        version = _installed_version(metric)
        versions[metric.name] = None if version is None else f"{metric.package} {version}"
    if versions["visqol"] is not None:
        mapper = "lattice model" if _lattice_runtime() else "polynomial mapping"
        versions["visqol"] += f" (speech: {mapper}; audio: SVR model)"
    return versions


def available_metrics() -> list[str]:
    """Names of the metrics that can be computed here, in METRICS order."""
    return [name for name, version in metric_versions().items() if version is not None]


def applicable(name: str, kind: str) -> bool:
    """Whether metric ``name`` is defined for a clip of this kind ("speech" or "music")."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind == "speech" or not METRICS[name].speech_only


# ---------------------------------------------------------------------------- helpers
def resample_array(x: np.ndarray, from_sr: int, to_sr: int) -> np.ndarray:
    """(T,) float array -> (T',) float64 resampled with ``codec.audio.resample``."""
    if from_sr == to_sr:
        return np.asarray(x, dtype=np.float64)
    return resample(torch.as_tensor(x, dtype=torch.float64), from_sr, to_sr).numpy()


def _check_pair(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, est = np.asarray(ref, dtype=np.float64), np.asarray(est, dtype=np.float64)
    if ref.ndim != 1 or ref.shape != est.shape or ref.size == 0:
        raise ValueError(f"need two non-empty 1-D signals of one length, got {ref.shape} and {est.shape}")
    return ref, est


def _batch(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32).reshape(1, 1, -1)      # (B=1, C=1, T)


# ---------------------------------------------------------------------------- the metrics
def pesq_wideband(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """Wide-band PESQ (P.862.2) MOS-LQO, both signals resampled to 16 kHz.

    NaN where PESQ cannot score: no speech in the reference (PesqError), or a silent decoded
    signal (its C code then fails on a NaN level, a ValueError)."""
    from pesq import PesqError, pesq

    ref, est = _check_pair(ref, est)
    try:
        return float(pesq(16000, resample_array(ref, sample_rate, 16000),
                          resample_array(est, sample_rate, 16000), "wb"))
    except (PesqError, ValueError):
        return math.nan


_STOI_TOO_SHORT = "Not enough STFT frames"     # the start of pystoi's warning before it returns 1e-5


def stoi_score(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """Short-time objective intelligibility in [0, 1] (pystoi resamples to 10 kHz itself).

    NaN where STOI is undefined: fewer than 30 frames of 25.6 ms (about 0.4 s) of the reference
    left after its silent frames are dropped. pystoi warns and returns 1e-5 there, a score that
    would sink any mean it entered."""
    from pystoi import stoi

    ref, est = _check_pair(ref, est)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", _STOI_TOO_SHORT, RuntimeWarning)
        try:
            return float(stoi(ref, est, sample_rate, extended=False))
        except RuntimeWarning as warning:           # only this one, unless warnings are errors
            if str(warning).startswith(_STOI_TOO_SHORT):
                return math.nan
            raise


@functools.cache
def visqol_api(mode: str):
    """The ViSQOL instance ``visqol_score`` uses, one per process and mode (building it loads the
    bundled model); for tools that want more of its result than the MOS, e.g. per-band similarity."""
    from visqol import VisqolApi

    logging.getLogger("visqol").setLevel(logging.ERROR)   # the polynomial-fallback note is in metric_versions
    api = VisqolApi()
    api.create(mode=mode)
    return api


VISQOL_RATES = {"speech": 16000, "audio": 48000}
LEVEL_DBOV_RANGE = (-80.0, 0.0)        # the active levels visqol_score can be asked to score at


def check_level_dbov(level_dbov: float) -> None:
    """ValueError unless ``level_dbov`` is an active speech level ViSQOL can be scored at."""
    low, high = LEVEL_DBOV_RANGE
    if not low <= level_dbov <= high:          # NaN fails too
        raise ValueError(f"--visqol-level is an active speech level in dBov, from {low:g} to {high:g}, "
                         f"got {level_dbov:g}")


def visqol_score(ref: np.ndarray, est: np.ndarray, sample_rate: int, mode: str = "speech",
                 level_dbov: float | None = None) -> float:
    """ViSQOL MOS-LQO: mode "speech" at 16 kHz or "audio" at 48 kHz (signals resampled to it).

    ViSQOL floors its spectrograms at an absolute -45 dB, so its score depends on how loud the
    pair is, not only on how they differ. ``level_dbov`` scales both signals by one gain that
    puts the reference's active speech level (:func:`active_speech_level_dbov`) there, e.g. -26,
    the level ITU-T test material is set to; None scores them as they are.

    NaN for a clip too short to hold one of ViSQOL's comparison patches (visqol-python fails
    with IndexError on e.g. 0.38 s of speech), or with ``level_dbov`` a silent reference;
    averages leave NaN out and report the count.
    """
    if mode not in VISQOL_RATES:
        raise ValueError(f"ViSQOL mode must be one of {tuple(VISQOL_RATES)}, got {mode!r}")
    ref, est = _check_pair(ref, est)
    if level_dbov is not None:
        check_level_dbov(level_dbov)
        level = active_speech_level_dbov(ref, sample_rate)
        if not math.isfinite(level):
            return math.nan
        gain = 10 ** ((level_dbov - level) / 20)
        ref, est = ref * gain, est * gain
    rate = VISQOL_RATES[mode]
    try:
        result = visqol_api(mode).measure_from_arrays(resample_array(ref, sample_rate, rate),
                                                       resample_array(est, sample_rate, rate), rate)
    except IndexError:
        return float("nan")
    return float(result.moslqo)


def active_speech_level_dbov(x: np.ndarray, sample_rate: int) -> float:
    """Active speech level in dBov (0 dBov: a full-scale square wave, mean square 1), by ITU-T
    P.56 method B; NaN for a signal with no activity (silence).

    The envelope is |x| smoothed twice by a one-pole filter of 0.03 s; a sample counts as active
    at threshold c while the envelope is at least c or was within the last 0.2 s (hangover).
    For each of the thresholds c = 2^-k (k = 0..15, dBov 0 down to -90), the active level is the
    signal's energy over its active samples; the level sought is where that active level stands
    15.9 dB above the threshold, interpolated in dB between the two thresholds around it. NaN
    also for a signal under about -74 dBov, where even the lowest threshold is within 15.9 dB, and
    for one whose activity ends before any threshold is (an impulse), where the ITU-T software
    library's sv56 reports -100."""
    from torchaudio.functional import lfilter

    x = np.asarray(x, dtype=np.float64)
    energy = float(np.dot(x, x))
    if x.size == 0 or energy == 0.0:
        return math.nan
    g = math.exp(-1.0 / (sample_rate * 0.03))
    b, a = torch.tensor([1 - g, 0.0], dtype=torch.float64), torch.tensor([1.0, -g], dtype=torch.float64)
    envelope = lfilter(lfilter(torch.from_numpy(np.abs(x)), a, b, clamp=False), a, b, clamp=False).numpy()
    hangover = math.ceil(0.2 * sample_rate)
    index = np.arange(x.size)
    thresholds = 2.0 ** -np.arange(15, -1, -1)                      # lowest first, dBov -90 .. 0
    active = np.empty(thresholds.size)
    for j, c in enumerate(thresholds):
        above = envelope >= c
        last = np.maximum.accumulate(np.where(above, index, -hangover - 1))
        active[j] = np.count_nonzero(index - last <= hangover)
    measured = active > 0                     # a prefix: activity only shrinks as c rises
    if not measured.any():                    # never reaches the lowest threshold, -90 dBov
        return math.nan
    level = 10 * np.log10(energy / active[measured])                # active level at each threshold
    excess = level - 20 * np.log10(thresholds[measured]) - 15.9     # falls as the threshold rises
    if excess[0] <= 0:                                              # under about -74 dBov
        return math.nan
    crossing = np.flatnonzero(excess <= 0)
    if crossing.size == 0:                    # activity ran out first: an impulse, a click (sv56: -100)
        return math.nan
    j = int(crossing[0])
    t = excess[j - 1] / (excess[j - 1] - excess[j])
    return float(level[j - 1] + t * (level[j] - level[j - 1]))


def si_sdr_db(ref: np.ndarray, est: np.ndarray) -> float:
    """Scale-invariant SDR in dB (``codec.losses.si_sdr``)."""
    ref, est = _check_pair(ref, est)
    return float(si_sdr(_batch(ref), _batch(est))[0])


@functools.cache
def _mel(sample_rate: int) -> MultiScaleMel:
    return MultiScaleMel(sample_rate)


@functools.cache
def _stft() -> MultiResolutionSTFT:
    return MultiResolutionSTFT()


@torch.no_grad()
def log_mel_distance(ref: np.ndarray, est: np.ndarray, sample_rate: int) -> float:
    """Multi-scale log-mel L1 distance (``codec.losses.MultiScaleMel``) at the clip's rate."""
    ref, est = _check_pair(ref, est)
    return float(_mel(sample_rate)(_batch(ref), _batch(est)))


@torch.no_grad()
def stft_distance(ref: np.ndarray, est: np.ndarray) -> float:
    """Multi-resolution STFT distance (``codec.losses.MultiResolutionSTFT``)."""
    ref, est = _check_pair(ref, est)
    return float(_stft()(_batch(ref), _batch(est)))


# ---------------------------------------------------------------------------- all at once
def compute_metrics(ref: np.ndarray, est: np.ndarray, sample_rate: int, kind: str = "speech",
                    names: list[str] | tuple[str, ...] | None = None,
                    visqol_level: float | None = None) -> dict[str, float]:
    """The metrics ``names`` (default: every available one) that apply to ``kind``.

    ref, est: (T,) float arrays at sample_rate  ->  {name: value}; speech-only metrics are
    left out for music, and ViSQOL runs in speech mode for speech and audio mode for music, at
    ``visqol_level`` dBov active level when given (see :func:`visqol_score`).
    """
    names = available_metrics() if names is None else list(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; known: {list(METRICS)}")
    compute = {
        "pesq": lambda: pesq_wideband(ref, est, sample_rate),
        "stoi": lambda: stoi_score(ref, est, sample_rate),
        "visqol": lambda: visqol_score(ref, est, sample_rate, "speech" if kind == "speech" else "audio",
                                       visqol_level),
        "si_sdr": lambda: si_sdr_db(ref, est),
        "log_mel": lambda: log_mel_distance(ref, est, sample_rate),
        "mrstft": lambda: stft_distance(ref, est),
    }
    return {name: compute[name]() for name in names if applicable(name, kind)}
