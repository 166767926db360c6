"""Audio file I/O and resampling.

Every tensor here is laid out channels first: ``(C, T)`` float32 in [-1, 1].
Reading goes through soundfile, so any format libsndfile reads works (WAV, FLAC,
Ogg Vorbis/Opus, MP3, AIFF, ...). Writing picks the format from the file suffix
and is atomic: a temporary file in the same folder is renamed over the target,
so an interrupted or failed save never leaves a half-written file behind.
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from codec.fileio import atomic_path

# Suffixes whose libsndfile format name differs from the upper-cased suffix.
_SUFFIX_FORMATS = {
    ".aif": ("AIFF", None),
    ".oga": ("OGG", "VORBIS"),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
}


MAX_SAMPLE_RATE = 768_000     # the highest rate any audio file or resampling may have (DXD is 352.8 kHz)


class ClippingWarning(UserWarning):
    """Samples beyond full scale were clipped on writing an integer-sample file."""


class AudioError(ValueError):
    """A file that cannot be read or written as audio, or samples that are not audio."""


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    frames: int  # samples per channel
    channels: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def audio_suffixes() -> frozenset[str]:
    """Lower-case file suffixes (with the dot) that soundfile can read here."""
    names = {f".{name.lower()}" for name in sf.available_formats()}
    return frozenset(names | set(_SUFFIX_FORMATS))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"no such audio file: {path}")
    if not path.is_file():
        raise AudioError(f"not a file: {path}")


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Sample rate, length and channel count, read from the header only."""
    path = Path(path)
    _check_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"cannot read {path} as audio: {err}") from None
    return AudioInfo(_file_rate(path, info.samplerate), int(info.frames), int(info.channels))


def load_audio(
    path: str | os.PathLike, start: int = 0, frames: int | None = None
) -> tuple[torch.Tensor, int]:
    """Read ``frames`` samples per channel from ``start`` (all when None).

    Returns ``(wav, sample_rate)`` with wav a float32 tensor ``(C, T)``.
    Raises AudioError for a missing file, a file that is not audio, no samples
    (an empty file, or a window past its end) and NaN or infinite samples.
    """
    path = Path(path)
    _check_file(path)
    try:
        _file_rate(path, sf.info(str(path)).samplerate)     # before reading: an absurd rate is refused cheaply
        data, sample_rate = sf.read(
            str(path), start=start, frames=-1 if frames is None else frames,
            dtype="float32", always_2d=True,
        )
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"cannot read {path} as audio: {err}") from None
    if data.size == 0:
        raise AudioError(f"{path} contains no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"{path} contains NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(data.T)), int(sample_rate)


def resample(wav: torch.Tensor, from_sr: int, to_sr: int) -> torch.Tensor:
    """Band-limited resampling along the last axis; ``wav`` is returned as is when the rates match.

    ``(..., T) -> (..., ceil(T * to_sr / from_sr))``.
    """
    from_sr, to_sr = _rate(from_sr), _rate(to_sr)
    if from_sr == to_sr:
        return wav
    g = math.gcd(from_sr, to_sr)
    down, up = from_sr // g, to_sr // g
    if up * (2 * kernel_width(down, up) + down) <= MAX_KERNEL_ELEMENTS:
        return AF.resample(wav, from_sr, to_sr)
    return sinc_resample(wav, down, up)


# torchaudio builds a (up, 2 * width + down) kernel for rates reduced by their gcd: 77 k floats
# for 44.1 -> 16 kHz, but 710 M (2.8 GB) for 44.101 -> 16 kHz. Above this many elements the same
# filter is evaluated tap by tap instead (sinc_resample), in memory and time per output sample
# that do not depend on the rates' gcd.
MAX_KERNEL_ELEMENTS = 1 << 22
LOWPASS_FILTER_WIDTH = 6     # torchaudio.functional.resample's defaults, kept by sinc_resample
ROLLOFF = 0.99
_OUTPUT_BLOCK = 1 << 15      # output samples (times channels) computed at once by sinc_resample


def kernel_width(down: int, up: int) -> int:
    """Input samples the filter reaches on each side of an output sample (torchaudio's ``width``)."""
    return math.ceil(LOWPASS_FILTER_WIDTH * down / (min(down, up) * ROLLOFF))


def sinc_resample(wav: torch.Tensor, down: int, up: int) -> torch.Tensor:
    """torchaudio's Hann-windowed sinc resampling from rate ``down`` to rate ``up`` (coprime),
    evaluated per output sample: ``(..., T) -> (..., ceil(T * up / down))``.

    Output sample m sits at input position m * down / up; it is the sum over the input samples k
    within ``width`` of it of x[k] * h((k / down - m / up) * base), with base = min(down, up) *
    ROLLOFF and h(t) = sinc(t) * cos(pi t / 12)^2 * base / down for |t| < 6 (zero beyond): the
    filter torchaudio tabulates, so the two agree to float rounding. Memory is O(block * taps).
    """
    *lead, length = wav.shape
    x = wav.reshape(-1, length)
    width = kernel_width(down, up)
    base = min(down, up) * ROLLOFF
    taps = torch.arange(-width, width + 2, dtype=torch.int64)                        # (W,)
    out_len = -(-length * up // down)
    padded = torch.nn.functional.pad(x, (width + 1, width + 2))                      # (B, T + pad)
    out = torch.empty(x.shape[0], out_len, dtype=x.dtype)
    block = max(1, _OUTPUT_BLOCK // max(1, x.shape[0]))
    for start in range(0, out_len, block):
        m = torch.arange(start, min(start + block, out_len), dtype=torch.int64)       # (M,)
        centre, phase = (m * down) // up, (m * down) % up                            # exact integers
        k = centre[:, None] + taps[None, :]                                          # (M, W) input index
        # (k / down - m / up) * base, from integers: (taps * up - phase) / (down * up) * base
        t = (taps[None, :] * up - phase[:, None]).to(torch.float64) * (base / (down * up))
        t = t.clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
        window = torch.cos(t * (math.pi / LOWPASS_FILTER_WIDTH / 2)) ** 2
        h = torch.where(t == 0, torch.ones_like(t), torch.sin(t * math.pi) / (t * math.pi))
        h = (h * window * (base / down)).to(x.dtype)                                 # (M, W)
        out[:, m[0]:m[-1] + 1] = (padded[:, k + width + 1] * h).sum(-1)
    return out.reshape(*lead, out_len)


def resampled_length(frames: int, from_sr: int, to_sr: int) -> int:
    """Length that ``resample`` gives for ``frames`` input samples."""
    from_sr, to_sr = _rate(from_sr), _rate(to_sr)
    if from_sr == to_sr:
        return frames
    g = math.gcd(from_sr, to_sr)
    return -(-frames * (to_sr // g) // (from_sr // g))


def _rate(sample_rate: int) -> int:
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise AudioError(f"sample rate must be a positive integer, got {sample_rate!r}")
    if sample_rate > MAX_SAMPLE_RATE:
        raise AudioError(f"sample rate {int(sample_rate)} Hz is above the {MAX_SAMPLE_RATE} Hz this codec handles")
    return int(sample_rate)


def _file_rate(path: Path, sample_rate: int) -> int:
    if not 1 <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(f"{path} claims a sample rate of {sample_rate} Hz; audio files must be "
                         f"1 to {MAX_SAMPLE_RATE} Hz")
    return int(sample_rate)


def to_mono(wav: torch.Tensor, channel: int | None = None) -> torch.Tensor:
    """``(C, T) -> (1, T)``: the mean of all channels, or only ``channel``."""
    if wav.dim() != 2:
        raise AudioError(f"expected audio shaped (C, T), got {tuple(wav.shape)}")
    if channel is None:
        return wav.mean(dim=0, keepdim=True)
    if not -wav.shape[0] <= channel < wav.shape[0]:
        raise AudioError(f"channel {channel} out of range for audio with {wav.shape[0]} channel(s)")
    return wav[channel].unsqueeze(0)


def audio_format(path: Path) -> tuple[str, str | None]:
    suffix = path.suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    name = suffix.lstrip(".").upper()
    if not name or name not in sf.available_formats():
        raise AudioError(f"cannot tell the audio format from the suffix of {path}")
    return name, None


def save_audio(
    path: str | os.PathLike, wav: torch.Tensor, sample_rate: int, subtype: str | None = None
) -> None:
    """Write ``wav`` ``(C, T)`` (or ``(T,)`` for mono) in the format named by the suffix.

    ``subtype`` is a soundfile subtype such as "PCM_16" or "FLOAT"; the default is
    the format's own (PCM_16 for WAV and FLAC). Samples are clipped to [-1, 1]
    for integer subtypes. The file appears complete or not at all.
    """
    audio_format(Path(path))                  # an unknown suffix fails before anything else
    wav = torch.as_tensor(wav).detach().to("cpu", torch.float32)
    if wav.dim() == 1:
        wav = wav.unsqueeze(0)
    if wav.dim() != 2 or wav.shape[0] == 0 or wav.shape[1] == 0:
        raise AudioError(f"expected non-empty audio shaped (C, T), got {tuple(wav.shape)}")
    write_audio_blocks(path, sample_rate, wav.shape[0], [wav], subtype)


def write_audio_blocks(path: str | os.PathLike, sample_rate: int, channels: int,
                       blocks: Iterable[torch.Tensor], subtype: str | None = None, overwrite: bool = True) -> None:
    """Write (C, t) blocks one after another into one file whose format the suffix names.

    Samples are clipped to [-1, 1] for integer subtypes; a block with NaN or infinite samples
    is an AudioError. The file appears complete or not at all (codec.fileio.atomic_path).
    """
    path = Path(path)
    fmt, default_subtype = audio_format(path)
    subtype = subtype or default_subtype or sf.default_subtype(fmt)
    if not path.parent.is_dir():
        raise AudioError(f"folder does not exist: {path.parent}")
    clip = not ("FLOAT" in subtype or "DOUBLE" in subtype)
    peak, clipped = 0.0, 0
    try:
        with atomic_path(path, overwrite) as tmp, sf.SoundFile(tmp, "w", _rate(sample_rate), channels, subtype,
                                                    format=fmt) as f:
            for block in blocks:
                if not torch.isfinite(block).all():
                    raise AudioError("refusing to save NaN or infinite samples")
                if clip:
                    over = block.abs() > 1.0
                    if over.any():
                        clipped += int(over.sum())
                        peak = max(peak, float(block.abs().max()))
                f.write((block.clamp(-1.0, 1.0) if clip else block).numpy().T)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        if isinstance(err, AudioError):
            raise
        raise AudioError(f"cannot write {path}: {err}") from None
    if clipped:
        warnings.warn(ClippingWarning(
            f"{path}: {clipped} samples beyond full scale were clipped (peak {peak:.2f}, "
            f"{20 * math.log10(peak):+.1f} dBFS)"), stacklevel=2)
