"""Classic codecs to compare against, through their command-line tools: Opus and Codec2.

Each round trip takes a mono float signal (T,) at any sample rate and returns the decoded
signal at that rate, with the same length, time-aligned with the input, and the size of the
file the codec wrote:

* **Opus** (opus-tools): ``opusenc --bitrate KBPS --hard-cbr in.wav out.opus``, then
  ``opusdec --rate 48000 out.opus out.wav`` (Opus's own rate), resampled back with
  ``codec.audio.resample``. opusdec removes the stream's pre-skip; what is left is a
  sub-millisecond delay of the SILK/CELT paths (within one sample at 16 kHz), which
  :func:`measure_lag` finds by cross-correlation and the round trip removes, then verifies.
  The size is the whole Ogg Opus file (headers and page overhead included).
* **Codec2** (codec2): 8 kHz raw signed 16-bit through ``c2enc MODE in.raw out.c2`` and
  ``c2dec MODE out.c2 out.raw``, resampled back. Codec2 is a vocoder: it keeps no waveform
  phase, so its delay (10-30 ms) is measured on the log-energy envelopes instead. The size is
  the ``.c2`` file (a 7-byte header and the frames).

Nothing here is a pickle or a network access; the tools are found on PATH.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from codec.audio import ClippingWarning, save_audio
from codec.metrics import resample_array

OPUS_TOOLS = ("opusenc", "opusdec")
CODEC2_TOOLS = ("c2enc", "c2dec")
CODEC2_RATE = 8000
# Nominal bits per second of each Codec2 mode c2enc accepts.
CODEC2_MODES = {"3200": 3200, "2400": 2400, "1600": 1600, "1400": 1400, "1300": 1300,
                "1200": 1200, "700C": 700, "450": 450, "450PWB": 450}
# Search window for Opus's residual delay: sub-millisecond, and under the shortest pitch period
# (2.5 ms), whose correlation peak on a short voiced clip can outscore the true one (a 0.6 s
# letter measured 54 samples at 16 kHz in a 5 ms window).
OPUS_MAX_LAG_S = 0.001
CODEC2_MAX_LAG_S = 0.05         # search window for Codec2's (larger) delay


class ClassicCodecError(RuntimeError):
    """A classic codec's tool is missing or failed."""


@dataclass
class ClassicResult:
    audio: np.ndarray       # (T,) float64 at the input's rate and length, time-aligned
    num_bytes: int          # size of the encoded file
    lag: int                # delay of the raw decoded signal, samples at the input rate (> 0: late)
    residual_lag: int       # delay measured again after compensation: 0 when aligned


# ---------------------------------------------------------------------------- tools
def missing_tools(tools: tuple[str, ...]) -> list[str]:
    """The tools of ``tools`` that are not on PATH."""
    return [tool for tool in tools if shutil.which(tool) is None]


def tool_version(tool: str) -> str:
    """First line a tool prints for --version (or its usage), to name it in caches and reports."""
    try:
        done = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return f"{tool} (unknown version)"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines and "usage" not in lines[0].lower() else tool


def _run(args: list[str]) -> None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise ClassicCodecError(f"{args[0]} is not installed") from None
    if done.returncode != 0:
        raise ClassicCodecError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")


# ---------------------------------------------------------------------------- alignment
def _envelope(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Log energy in a sliding 2 ms window: (T,) -> (T,)."""
    width = max(1, sample_rate // 500)
    energy = np.convolve(x * x, np.ones(width) / width, mode="same")
    return np.log(energy + 1e-6)


def measure_lag(ref: np.ndarray, est: np.ndarray, max_lag: int, envelope_rate: int | None = None) -> int:
    """The shift in [-max_lag, max_lag] that best lines ``est`` up with ``ref``, by cross-correlation.

    Positive: est is late, est[n + lag] ~ ref[n]. With ``envelope_rate`` (the signals' sample
    rate) the log-energy envelopes are correlated instead of the waveforms. 0 for silence.
    """
    ref, est = np.asarray(ref, dtype=np.float64), np.asarray(est, dtype=np.float64)
    if envelope_rate is not None:
        ref, est = _envelope(ref, envelope_rate), _envelope(est, envelope_rate)
    ref, est = ref - ref.mean(), est - est.mean()
    if not ref.any() or not est.any():
        return 0
    size = len(ref) + len(est)
    corr = np.fft.irfft(np.fft.rfft(est, size) * np.conj(np.fft.rfft(ref, size)), size)  # corr[k] = sum est[n+k] ref[n]
    lags = np.arange(-max_lag, max_lag + 1)
    return int(lags[np.argmax(corr[lags])])            # negative k wraps to the end of corr


def shift(est: np.ndarray, lag: int, length: int) -> np.ndarray:
    """est advanced by ``lag`` samples (delayed when negative), cut or zero-padded to ``length``."""
    est = est[lag:] if lag >= 0 else np.concatenate([np.zeros(-lag), est])
    return np.pad(est[:length], (0, max(0, length - len(est))))


def _aligned(ref: np.ndarray, est: np.ndarray, max_lag: int, envelope_rate: int | None,
             num_bytes: int) -> ClassicResult:
    est = np.pad(est[: len(ref)], (0, max(0, len(ref) - len(est))))
    lag = measure_lag(ref, est, max_lag, envelope_rate)
    out = shift(est, lag, len(ref))
    return ClassicResult(out, num_bytes, lag, measure_lag(ref, out, max_lag, envelope_rate))


# ---------------------------------------------------------------------------- codecs
def opus_roundtrip(audio: np.ndarray, sample_rate: int, kbps: float) -> ClassicResult:
    """Encode (T,) audio with Opus at ``kbps`` (hard CBR) and decode it: see the module docstring."""
    audio = np.asarray(audio, dtype=np.float64)
    with tempfile.TemporaryDirectory(prefix="codec-opus-") as tmp:
        src, coded, decoded = Path(tmp, "in.wav"), Path(tmp, "out.opus"), Path(tmp, "out.wav")
        with warnings.catch_warnings():             # clipping is part of what is measured
            warnings.simplefilter("ignore", ClippingWarning)
            save_audio(src, torch.as_tensor(audio).float(), sample_rate, subtype="PCM_16")
        _run(["opusenc", "--quiet", "--bitrate", f"{kbps:g}", "--hard-cbr", str(src), str(coded)])
        _run(["opusdec", "--quiet", "--rate", "48000", str(coded), str(decoded)])
        out, rate = sf.read(str(decoded), dtype="float64", always_2d=True)
        num_bytes = coded.stat().st_size
    out = resample_array(out.mean(axis=1), rate, sample_rate)
    return _aligned(audio, out, round(OPUS_MAX_LAG_S * sample_rate), None, num_bytes)


def codec2_roundtrip(audio: np.ndarray, sample_rate: int, mode: str) -> ClassicResult:
    """Encode (T,) speech with Codec2 ``mode`` (e.g. "3200", "700C") at 8 kHz and decode it."""
    if mode not in CODEC2_MODES:
        raise ValueError(f"unknown Codec2 mode {mode!r}; modes: {', '.join(CODEC2_MODES)}")
    audio = np.asarray(audio, dtype=np.float64)
    narrow = np.clip(resample_array(audio, sample_rate, CODEC2_RATE), -1.0, 1.0)
    with tempfile.TemporaryDirectory(prefix="codec-c2-") as tmp:
        src, coded, decoded = Path(tmp, "in.raw"), Path(tmp, "out.c2"), Path(tmp, "out.raw")
        np.round(narrow * 32767).astype("<i2").tofile(src)
        _run(["c2enc", mode, str(src), str(coded)])
        _run(["c2dec", mode, str(coded), str(decoded)])
        out = np.fromfile(decoded, dtype="<i2").astype(np.float64) / 32768.0
        num_bytes = coded.stat().st_size
    out = resample_array(out, CODEC2_RATE, sample_rate)
    return _aligned(audio, out, round(CODEC2_MAX_LAG_S * sample_rate), sample_rate, num_bytes)
