"""What the quality metrics respond to: controlled changes to one system's decoded audio, scored.

    python tools/metric_probe.py bench_out/heldout_itru speech16k-nq6 none pitch:0.6 sharpen:0.3
    python tools/metric_probe.py bench_out/heldout_itru reference none noise:-70 gate:-70

Reads the decoded audio a `codec bench` run keeps (``OUT/audio/<clip>/<system>.wav`` next to
``reference.wav``; the system ``reference`` probes the reference itself), applies each probe to
every speech clip, scores it against the reference with the benchmark's own metric functions, and
prints each probe's means and its paired difference from the unchanged audio (± 95% t-interval
over the clips, as ``tools/compare_systems.py``). Probes, X a number:

    none          the audio as decoded
    gain:X        multiply by X (the metrics should not care)
    delay:X       delay by X samples, zeros in front, same length
    noise:X       add white noise whose RMS is X dB re the clip's peak sample (seeded)
    gate:X        zero the STFT cells more than X dB under the clip's loudest cell
    lowpass:X     zero the STFT bins above X Hz
    pitch:X       a long-term (pitch) postfilter of strength X: each 10 ms frame mixes in the
                  audio one pitch period earlier and later, weighted X times their correlation
    sharpen:X     raise each STFT magnitude's ratio to its local (in frequency) log-average to
                  the power 1 + X, keeping each frame's energy: peaks up, valleys down

The last two are the classic speech-codec decoder postfilters, so this also measures whether one
would help a model's decoded audio on these metrics.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from codec.audio import AudioError  # noqa: E402
from codec.bench import MARKER, load_mono, positive_int  # noqa: E402
from codec.metrics import check_level_dbov  # noqa: E402
from codec.report import mean_ci  # noqa: E402
from visqol_bands import _music_clips  # noqa: E402

METRICS = ("pesq", "stoi", "visqol")
LABELS = {"pesq": "PESQ-WB", "stoi": "STOI", "visqol": "ViSQOL"}
WINDOW_S, HOP_S = 0.032, 0.008


class ProbeError(ValueError):
    """A probe, the run folder or a system is not what the tool needs."""


# ---------------------------------------------------------------------------- the probes
def _stft(x: np.ndarray, sample_rate: int) -> tuple[torch.Tensor, dict]:
    n_fft = int(round(WINDOW_S * sample_rate))
    args = dict(n_fft=n_fft, hop_length=int(round(HOP_S * sample_rate)), window=torch.hann_window(n_fft,
                dtype=torch.float64))
    return torch.stft(torch.as_tensor(x, dtype=torch.float64), return_complex=True, **args), args


def _istft(spec: torch.Tensor, args: dict, length: int) -> np.ndarray:
    return torch.istft(spec, length=length, **args).numpy()


def delay(x: np.ndarray, samples: int) -> np.ndarray:
    if samples < 0:
        raise ProbeError(f"delay must be >= 0 samples, got {samples}")
    return np.concatenate([np.zeros(min(samples, len(x))), x[:max(len(x) - samples, 0)]])


def add_noise(x: np.ndarray, db: float, seed: int = 0) -> np.ndarray:
    level = np.abs(x).max() * 10 ** (db / 20)
    return x + level * np.random.default_rng(seed).standard_normal(len(x))


def gate(x: np.ndarray, db: float, sample_rate: int) -> np.ndarray:
    spec, args = _stft(x, sample_rate)
    power = spec.abs() ** 2
    spec[power < power.max() * 10 ** (db / 10)] = 0
    return _istft(spec, args, len(x))


def lowpass(x: np.ndarray, cutoff_hz: float, sample_rate: int) -> np.ndarray:
    if not 0 < cutoff_hz < sample_rate / 2:
        raise ProbeError(f"lowpass:{cutoff_hz:g} must lie between 0 and {sample_rate / 2:g} Hz at {sample_rate} Hz")
    spec, args = _stft(x, sample_rate)
    freqs = torch.fft.rfftfreq(args["n_fft"], 1 / sample_rate, dtype=torch.float64)
    spec[freqs > cutoff_hz] = 0
    return _istft(spec, args, len(x))


def sharpen(x: np.ndarray, amount: float, sample_rate: int, width_hz: float = 280.0) -> np.ndarray:
    """Spectral peak enhancement: |X| (|X| / G)^amount, G the geometric mean of |X| over
    ``width_hz`` around each bin; each frame's energy kept. Phase unchanged."""
    spec, args = _stft(x, sample_rate)
    mag = spec.abs() + 1e-9
    bins = max(1, int(round(width_hz * args["n_fft"] / sample_rate))) | 1        # odd
    log = torch.nn.functional.pad(mag.log().T[:, None], (bins // 2, bins // 2), mode="replicate")
    local = torch.nn.functional.avg_pool1d(log, bins, stride=1)[:, 0].T.exp()
    new = mag * (mag / local) ** amount
    new = new * ((mag ** 2).sum(0) / (new ** 2).sum(0).clamp(min=1e-30)).sqrt()
    return _istft(spec * (new / mag), args, len(x))


def pitch_postfilter(x: np.ndarray, strength: float, sample_rate: int, min_hz: float = 50.0,
                     max_hz: float = 400.0, threshold: float = 0.4) -> np.ndarray:
    """Long-term postfilter: per 10 ms frame (Hann overlap-add over 20 ms), the lag T of highest
    normalised correlation over a 30 ms window between 1/max_hz and 1/min_hz; where that
    correlation r exceeds ``threshold``, y = (x + a (x[n-T] + x[n+T]) / 2) / (1 + a), a = strength r.
    An exactly periodic signal passes unchanged."""
    frame = int(round(0.010 * sample_rate))
    win = 3 * frame
    t_min, t_max = int(sample_rate / max_hz), int(math.ceil(sample_rate / min_hz))
    margin = t_max + win
    pad = np.concatenate([np.zeros(margin), np.asarray(x, dtype=np.float64), np.zeros(margin)])
    taper = np.hanning(2 * frame + 1)[:-1]          # overlapping halves sum to one
    out = np.zeros(len(x) + 3 * frame)
    for start in range(-frame, len(x), frame):
        centre = margin + start + frame
        seg = pad[centre - win // 2: centre + win // 2]
        lagged = np.lib.stride_tricks.sliding_window_view(
            pad[centre - win // 2 - t_max: centre + win // 2 - t_min], win)[::-1]   # row k: lag t_min + k
        energy = seg @ seg
        r = (lagged @ seg) / np.sqrt(energy * np.einsum("ij,ij->i", lagged, lagged) + 1e-30)
        k = int(np.argmax(r))
        a = strength * r[k] if r[k] > threshold and energy > 0 else 0.0
        lag, s0 = t_min + k, margin + start
        block = pad[s0: s0 + 2 * frame]
        block = (block + a * 0.5 * (pad[s0 - lag: s0 - lag + 2 * frame] + pad[s0 + lag: s0 + lag + 2 * frame])) / (1 + a)
        out[start + frame: start + 3 * frame] += taper * block
    return out[frame: frame + len(x)]


# name -> (what X may be, test of X, the change); lowpass is checked against the clip's rate when applied
PROBES = {
    "gain": ("a number other than 0", lambda v: v != 0, lambda v: lambda x, sr: x * v),
    "delay": ("a whole number of samples, >= 0", lambda v: v >= 0 and v == int(v),
              lambda v: lambda x, sr: delay(x, int(v))),
    "noise": ("a level in dB", lambda v: True, lambda v: lambda x, sr: add_noise(x, v)),
    "gate": ("a level in dB under 0", lambda v: v < 0, lambda v: lambda x, sr: gate(x, v, sr)),
    "lowpass": ("a frequency in Hz above 0", lambda v: v > 0, lambda v: lambda x, sr: lowpass(x, v, sr)),
    "pitch": ("a strength from 0 to 1", lambda v: 0 <= v <= 1, lambda v: lambda x, sr: pitch_postfilter(x, v, sr)),
    "sharpen": ("an amount >= 0", lambda v: v >= 0, lambda v: lambda x, sr: sharpen(x, v, sr)),
}


def parse_probe(text: str):
    """'pitch:0.6' -> a function (x, sample_rate) -> x'; ProbeError for an unknown probe or bad X."""
    name, _, value = text.partition(":")
    if name == "none" and not value:
        return lambda x, sr: x
    if name not in PROBES:
        raise ProbeError(f"unknown probe {text!r}; probes: none, " + ", ".join(f"{n}:X" for n in PROBES))
    what, valid, make = PROBES[name]
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or not valid(number):
        raise ProbeError(f"probe {text!r}: X must be {what}")
    return make(number)


# ---------------------------------------------------------------------------- scoring
def _score(task: tuple[Path, str, list[str], list[str], float | None]) -> dict[str, dict[str, float]]:
    from codec.metrics import pesq_wideband, stoi_score, visqol_score
    clip, system, probes, metrics, visqol_level = task
    functions = {"pesq": pesq_wideband, "stoi": stoi_score,
                 "visqol": lambda ref, est, sr: visqol_score(ref, est, sr, "speech", visqol_level)}
    ref, sample_rate = load_mono(clip / "reference.wav")
    est, est_rate = load_mono(clip / f"{system}.wav")
    if est_rate != sample_rate:
        raise ProbeError(f"{clip.name}: {system}.wav is at {est_rate} Hz, reference.wav at {sample_rate} Hz")
    scores = {}
    for probe in probes:
        changed = parse_probe(probe)(est, sample_rate)
        scores[probe] = {m: functions[m](ref, changed, sample_rate) for m in metrics}
    return scores


def speech_clips(run: Path, system: str) -> list[Path]:
    audio = run / "audio"
    if not audio.is_dir():
        raise ProbeError(f"{run} has no audio/ folder: give the --out folder of a `codec bench` run")
    music = _music_clips(run)
    clips = sorted(d for d in audio.iterdir() if (d / "reference.wav").is_file() and d.name not in music)
    with_system = [d for d in clips if (d / f"{system}.wav").is_file()]
    if not with_system:
        known = sorted({p.stem for d in clips for p in d.glob("*.wav")})
        raise ProbeError(f"no decoded audio for system {system!r} in {audio}; it has: {', '.join(known)}")
    return with_system


def run_visqol_level(run: Path) -> float | None:
    """The --visqol-level the benchmark run was scored at (None: as recorded, or no bench.json)."""
    try:
        return json.loads((run / MARKER).read_text()).get("visqol_level_dbov")
    except (OSError, ValueError, AttributeError):
        return None


def probe_run(run: Path, system: str, probes: list[str], metrics: list[str], jobs: int = 1,
              max_clips: int | None = None, visqol_level: float | None = None) -> list[dict[str, dict[str, float]]]:
    """Per clip: {probe: {metric: score}}, "none" first. ``visqol_level``: as ``codec bench --visqol-level``."""
    if visqol_level is not None:
        try:
            check_level_dbov(visqol_level)
        except ValueError as err:
            raise ProbeError(str(err)) from None
    for probe in probes:
        parse_probe(probe)                            # fail before any scoring
    if "none" not in probes:
        probes = ["none", *probes]
    clips = speech_clips(run, system)[:max_clips]
    tasks = [(clip, system, probes, metrics, visqol_level) for clip in clips]
    if jobs == 1:
        return [_score(t) for t in tasks]
    with Pool(jobs) as pool:
        return pool.map(_score, tasks)


def format_table(scores: list[dict[str, dict[str, float]]], metrics: list[str]) -> str:
    lines = [f"{'probe':>14}  " + "  ".join(f"{LABELS[m] + ' (vs none)':>28}" for m in metrics)]
    for probe in scores[0]:
        cells = []
        for m in metrics:
            mean, _, n = mean_ci([s[probe][m] for s in scores])
            diff, half, _ = mean_ci([s[probe][m] - s["none"][m] for s in scores])
            cells.append(f"{mean:7.3f} ({diff:+.3f} ± {half:.3f}, n={n})")
        lines.append(f"{probe:>14}  " + "  ".join(f"{c:>28}" for c in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the --out folder of a `codec bench` run")
    parser.add_argument("system", help="a system id as in results.csv (speech16k-nq6, opus-6kbps), or reference")
    parser.add_argument("probes", nargs="+", help="none, gain:X, delay:X, noise:X, gate:X, lowpass:X, pitch:X, sharpen:X")
    parser.add_argument("--metrics", default="pesq,visqol", help="comma-separated, of pesq, stoi, visqol")
    parser.add_argument("--jobs", type=positive_int, default=1, help="clips scored in parallel")
    parser.add_argument("--max-clips", type=positive_int, metavar="N", help="only the first N clips")
    parser.add_argument("--visqol-level", type=float, metavar="DBOV",
                        help="score ViSQOL at this active speech level, as `codec bench --visqol-level` "
                             "(default: the level the run was scored at, from its bench.json)")
    args = parser.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    try:
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise ProbeError(f"--metrics takes {', '.join(METRICS)}; got {args.metrics!r}")
        level = args.visqol_level if args.visqol_level is not None else run_visqol_level(args.run)
        if level is not None and "visqol" in metrics:
            print(f"ViSQOL at {level:g} dBov active speech level")
        print(format_table(probe_run(args.run, args.system, args.probes, metrics, args.jobs, args.max_clips,
                                     level), metrics))
    except (ProbeError, AudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
