"""Where in frequency ViSQOL finds the differences: per-band similarity of systems of a benchmark run.

    python tools/visqol_bands.py bench_out/heldout_itru speech16k-nq12 opus-6kbps codec2-3200

ViSQOL (speech mode) compares gammatone spectrograms band by band with NSIM and maps the
per-band similarities (``fvnsim``) to a MOS with a model that weighs the bands unequally. Two
systems with the same mean similarity can get very different MOS, so the mean alone does not
say what to fix. This prints, for each band's centre frequency, each system's similarity
averaged over the run's clips, then each system's mean similarity and MOS. It reads the decoded
audio the benchmark keeps (``OUT/audio/<clip>/<system>.wav`` next to ``reference.wav``). Only
speech clips are scored (ViSQOL's speech mode, as the benchmark scores them; where the run's
``results.csv`` marks a clip as music it is left out); clips too short for one ViSQOL patch are
skipped, as in the benchmark.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from codec.audio import AudioError  # noqa: E402
from codec.bench import load_mono, positive_int  # noqa: E402


class BandsError(ValueError):
    """The run folder or a system is missing."""


def _music_clips(run: Path) -> set[str]:
    """Clip ids that the run's results.csv marks as music (none when it has no results.csv)."""
    results = run / "results.csv"
    if not results.is_file():
        return set()
    with open(results, newline="") as f:
        return {row["clip"] for row in csv.DictReader(f) if row.get("kind") == "music"}


def band_similarities(run: Path, systems: list[str], max_clips: int | None = None):
    """(centre frequencies in Hz, {system: (clips, bands) fvnsim}, {system: (clips,) MOS}, clips used)."""
    from codec.metrics import VISQOL_RATES, resample_array, visqol_api
    try:
        api = visqol_api("speech")           # the benchmark's own instance and settings
    except ImportError:
        raise BandsError("ViSQOL is not installed: pip install 'visqol-python[lattice]'") from None
    rate = VISQOL_RATES["speech"]

    def at_rate(path: Path) -> np.ndarray:
        wav, sample_rate = load_mono(path)
        return resample_array(wav, sample_rate, rate)

    audio = run / "audio"
    if not audio.is_dir():
        raise BandsError(f"{run} has no audio/ folder: give the --out folder of a `codec bench` run")
    music = _music_clips(run)
    clips = sorted(d for d in audio.iterdir() if (d / "reference.wav").is_file() and d.name not in music)
    if max_clips:
        clips = clips[:max_clips]
    if not clips:
        raise BandsError(f"no speech clips under {audio}")
    for system in systems:
        if not any((d / f"{system}.wav").is_file() for d in clips):
            known = sorted({p.stem for d in clips for p in d.glob("*.wav")} - {"reference"})
            raise BandsError(f"no decoded audio for system {system!r} in {audio}; it has: {', '.join(known)}")
    sims: dict[str, list[np.ndarray]] = {s: [] for s in systems}
    mos: dict[str, list[float]] = {s: [] for s in systems}
    freqs, used, complete = None, 0, 0
    for clip in clips:
        if not all((clip / f"{s}.wav").is_file() for s in systems):
            continue
        complete += 1
        ref = at_rate(clip / "reference.wav")
        try:
            results = {s: api.measure_from_arrays(ref, at_rate(clip / f"{s}.wav"), rate) for s in systems}
        except IndexError:            # visqol-python: too short for one patch (the benchmark's NaN)
            continue
        used += 1
        for s, r in results.items():
            sims[s].append(np.asarray(r.fvnsim, dtype=float))
            mos[s].append(float(r.moslqo))
            freqs = np.asarray(r.center_freq_bands, dtype=float)
    if not complete:
        raise BandsError(f"no clip has decoded audio for all of {', '.join(systems)}")
    if not used:
        raise BandsError("every clip was too short for ViSQOL")
    return freqs, {s: np.stack(v) for s, v in sims.items()}, {s: np.array(v) for s, v in mos.items()}, used


def format_table(freqs: np.ndarray, sims: dict[str, np.ndarray], mos: dict[str, np.ndarray], used: int) -> str:
    names = list(sims)
    width = max(10, *(len(n) for n in names))
    lines = [f"ViSQOL per-band similarity (fvnsim), mean over {used} clips",
             f"{'band Hz':>8}  " + "  ".join(f"{n:>{width}}" for n in names)]
    for k, f in enumerate(freqs):
        lines.append(f"{f:8.0f}  " + "  ".join(f"{sims[n][:, k].mean():>{width}.3f}" for n in names))
    lines.append(f"{'mean':>8}  " + "  ".join(f"{sims[n].mean():>{width}.3f}" for n in names))
    lines.append(f"{'MOS':>8}  " + "  ".join(f"{mos[n].mean():>{width}.2f}" for n in names))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the --out folder of a `codec bench` run")
    parser.add_argument("systems", nargs="+", help="system ids, as in results.csv (speech16k-nq12, opus-6kbps, ...)")
    parser.add_argument("--max-clips", type=positive_int, metavar="N", help="only the first N clips")
    args = parser.parse_args(argv)
    try:
        print(format_table(*band_similarities(args.run, args.systems, args.max_clips)))
    except (BandsError, AudioError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
