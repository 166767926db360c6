"""Long audio in bounded memory: chunked encoding and decoding, windowed reading and writing.

Signals. A :class:`Signal` is audio that can be read in windows: ``read(start, stop)`` gives
``(C, stop - start)`` float32 samples, zeros outside ``[0, length)``. A file
(:class:`FileSignal`), a tensor (:class:`TensorSignal`), a resampled view of another signal
(:class:`ResampledSignal`) and the decoder's output (:class:`DecodedSignal`) are signals, so a
one-hour file is encoded or decoded by reading one window at a time, never whole.

Chunks and context. ``encode_signal`` cuts the frame axis into chunks of ``chunk_frames``
frames. Each chunk is encoded together with ``left`` frames of real audio before it and
``right`` frames after it, where (left, right) = ``receptive_field_frames(cfg)`` covers every
input sample any of the chunk's frames depends on; the context frames' codes are dropped. At
the start and end of the signal there is no context: the chunk starts at sample 0 or ends at
the padded end ``frames * hop_length`` (zeros past the signal, exactly as ``Codec.encode``
pads), so every convolution applies its own zero padding there just as it does on the whole
file. Decoding mirrors this with ``decoder_context_frames(cfg)``.

The guarantee. Every value a kept frame depends on is computed from the same inputs as in a
whole-file pass, so chunked results differ from whole-file results at most by floating-point
rounding, and not at all where the arithmetic is the same:

* codes, exact case: PyTorch on CPU (float32) runs a convolution through oneDNN when its input
  has more than 20480 elements (or a batch > 1) and through its native kernel otherwise, and
  either kernel's value for an output sample does not depend on the input's length. When a
  chunk plus its context is long enough for every layer to take the kernel the whole-file pass
  takes, the latents are bit-identical and ``encode_chunked(model, wav) == model.encode(wav)``
  exactly. For the default architecture that holds when chunks have >= ~100 frames, which
  ``chunk_frames >= 200`` ensures (the default is 250; chunks are balanced, so none is
  shorter than half of it), on files of any length (tested, tests/test_streaming.py).
* codes, otherwise (shorter chunks, small models whose deep layers stay under that size, other
  devices): latents agree to float32 rounding (~1e-7 relative) and a code can differ only where
  the latent is equidistant from two codebook vectors to within that rounding (an argmin tie;
  either code is then a nearest one). Measured on 13.5 s of real speech with a 32-channel test
  model and chunks of 1 to 113 frames: 0 to 3 of 676 frames differ, every one such a tie (tested).
* audio: ``decode_chunked(model, codes)`` equals ``model.decode(codes)`` to within 1e-5
  absolute (measured: 1.5e-7), with exactly the same length (tested).
* resampling: ``ResampledSignal`` windows equal ``codec.audio.resample`` of the whole signal to
  within 1e-6 absolute (same kernel, same alignment; tested).

Memory: encoding holds one chunk plus its context (``(chunk_frames + left + right) *
hop_length`` samples per channel) and the codes; decoding holds the codes and one window.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from codec.audio import AudioError, kernel_width, audio_info, load_audio, resample, write_audio_blocks
from codec.convnext import ChannelNorm, ConvNeXtBlock, FrameEncoder
from codec.istft import ISTFTDecoder, ISTFTHead
from codec.layers import ELU, Conv1d, ConvTranspose1d, ResidualUnit, Snake
from codec.model import CodecConfig, make_decoder, make_encoder
from codec.seanet import SEANetDecoder, SEANetEncoder

DEFAULT_CHUNK_FRAMES = 250          # 5 s at 16 kHz / 320; the default model then peaks at ~300 MB above torch's own
_POINTWISE = (ELU, Snake, nn.Identity, ChannelNorm)


# ---------------------------------------------------------------------------- receptive fields
def input_span(module: nn.Module) -> tuple[int, int]:
    """(A, B): output frame j of a downsampling stack depends on input samples [j*J - A, j*J + B].

    J is the stack's total stride. Walks Sequential / ResidualUnit / Conv1d / pointwise layers,
    and the frame encoder's ConvNeXtBlock.
    """
    a, b, _ = _dependency(module, 0, 0, 1)
    return a, b


def _dependency(module: nn.Module, a: int, b: int, jump: int) -> tuple[int, int, int]:
    """Extend the dependency (A, B, J) of the layers before ``module`` through it."""
    if isinstance(module, nn.Sequential):
        for layer in module:
            a, b, jump = _dependency(layer, a, b, jump)
        return a, b, jump
    if isinstance(module, (SEANetEncoder, FrameEncoder)):
        return _dependency(module.net, a, b, jump)
    if isinstance(module, ConvNeXtBlock):           # x + f(dwconv(x)), f pointwise per frame
        (k,), (pad,) = module.dwconv.kernel_size, module.dwconv.padding
        return a + pad * jump, b + (k - 1 - pad) * jump, jump
    if isinstance(module, ResidualUnit):            # x + block(x): the wider of the two
        ba, bb, _ = _dependency(module.block, a, b, jump)
        return max(a, ba), max(b, bb), jump
    if isinstance(module, Conv1d):                  # out[j] reads in[j*s - pad_left + t*d], t < k
        (k,), (s,), (d,) = module.conv.kernel_size, module.conv.stride, module.conv.dilation
        left = module.padding[0]
        return a + left * jump, b + ((k - 1) * d - left) * jump, jump * s
    if isinstance(module, _POINTWISE):
        return a, b, jump
    raise TypeError(f"no receptive-field rule for {type(module).__name__}")


def output_span(module: nn.Module) -> tuple[int, int]:
    """(L, R): input frame f of an upsampling stack influences output samples [f*U - L, f*U + R].

    U is the stack's total upsampling. Walks Sequential / ResidualUnit / Conv1d (stride 1) /
    ConvTranspose1d / pointwise layers, and the inverse-STFT decoder's ConvNeXtBlock / ISTFTHead.
    """
    left, right, _ = _influence(module, 0, 0, 1)
    return left, right


def _influence(module: nn.Module, left: int, right: int, up: int) -> tuple[int, int, int]:
    """Extend the influence (L, R, U) of the layers before ``module`` through it."""
    if isinstance(module, nn.Sequential):
        for layer in module:
            left, right, up = _influence(layer, left, right, up)
        return left, right, up
    if isinstance(module, (SEANetDecoder, ISTFTDecoder)):
        return _influence(module.net, left, right, up)
    if isinstance(module, ResidualUnit):
        bl, br, _ = _influence(module.block, left, right, up)
        return max(left, bl), max(right, br), up
    if isinstance(module, ConvNeXtBlock):           # x + f(dwconv(x)), f pointwise per frame
        (k,), (pad,) = module.dwconv.kernel_size, module.dwconv.padding
        return left + k - 1 - pad, right + pad, up  # the residual's own span is narrower
    if isinstance(module, ISTFTHead):               # frame i reaches samples [i*hop - L, i*hop + R]
        (a, b), s = module.reach, module.hop
        return left * s + a, right * s + b, up * s
    if isinstance(module, Conv1d):                  # in[i] reaches out[i + pad_left - t*d], t < k
        (k,), (s,), (d,) = module.conv.kernel_size, module.conv.stride, module.conv.dilation
        if s != 1:
            raise TypeError("strided Conv1d in an upsampling stack has no influence rule")
        pad = module.padding[0]
        return left + (k - 1) * d - pad, right + pad, up
    if isinstance(module, ConvTranspose1d):         # in[i] reaches out[i*s - trim + t], t < k
        (k,), (s,) = module.conv.kernel_size, module.conv.stride
        trim = module.trim[0]
        return left * s + trim, right * s + k - 1 - trim, up * s
    if isinstance(module, _POINTWISE):
        return left, right, up
    raise TypeError(f"no receptive-field rule for {type(module).__name__}")


def _on_meta(build: Callable[[object], nn.Module], cfg: object) -> nn.Module:
    with torch.device("meta"):                      # shapes only: no memory, no initialisation cost
        return build(cfg)


def receptive_field_frames(cfg: CodecConfig) -> tuple[int, int]:
    """(left, right): frames of context on each side that fix every code of a chunk.

    Frame j depends on input samples [j*hop - A, j*hop + B] (``input_span``); a chunk of frames
    [f0, f1) read with samples [(f0 - left) * hop, (f1 + right) * hop) contains all of them
    when left = ceil(A / hop) and right = floor(B / hop).
    """
    a, b = input_span(_on_meta(make_encoder, cfg))
    hop = cfg.seanet.hop_length
    return -(-a // hop), b // hop


def decoder_context_frames(cfg: CodecConfig) -> tuple[int, int]:
    """(left, right): frames of codes around a chunk that fix every decoded sample of it.

    Frame f influences output samples [f*hop - L, f*hop + R] (``output_span``), so the
    samples of frames [f0, f1) depend on frames [f0 - floor(R / hop), f1 + ceil(L / hop)).
    """
    left, right = output_span(_on_meta(make_decoder, cfg))
    hop = cfg.seanet.hop_length
    return right // hop, -(-left // hop)


# ---------------------------------------------------------------------------- signals
class Signal:
    """Audio read in windows. Subclasses set sample_rate, channels, length and define _read."""

    sample_rate: int
    channels: int
    length: int                 # samples per channel

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Samples [start, stop) -> (C, stop - start) float32; zeros outside [0, length)."""
        out = torch.zeros(self.channels, stop - start)
        first, last = max(start, 0), min(stop, self.length)
        if first < last:
            out[:, first - start:last - start] = self._read(first, last)
        return out

    def _read(self, start: int, stop: int) -> torch.Tensor:
        """Samples [start, stop) with 0 <= start < stop <= length -> (C, stop - start)."""
        raise NotImplementedError

    @property
    def duration(self) -> float:
        return self.length / self.sample_rate


class TensorSignal(Signal):
    """A (C, T) tensor held in memory."""

    def __init__(self, wav: torch.Tensor, sample_rate: int) -> None:
        if wav.dim() != 2:
            raise ValueError(f"expected audio shaped (C, T), got {tuple(wav.shape)}")
        self.wav, self.sample_rate = wav, int(sample_rate)
        self.channels, self.length = wav.shape

    def _read(self, start: int, stop: int) -> torch.Tensor:
        return self.wav[:, start:stop]


class FileSignal(Signal):
    """An audio file, read window by window (anything soundfile reads)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        info = audio_info(self.path)
        if info.frames == 0:
            raise AudioError(f"{self.path} contains no samples")
        self.sample_rate, self.channels, self.length = info.sample_rate, info.channels, info.frames

    def _read(self, start: int, stop: int) -> torch.Tensor:
        wav, _ = load_audio(self.path, start, stop - start)      # checks NaN / inf samples
        if wav.shape[1] != stop - start:
            raise AudioError(f"{self.path} ends at sample {start + wav.shape[1]}, "
                             f"before the {self.length} its header announces")
        return wav


class ResampledSignal(Signal):
    """``source`` at another sample rate; windows match ``codec.audio.resample`` of the whole.

    torchaudio's resampler maps every block of ``down`` input samples to ``up`` output samples
    (rates divided by their gcd) with a kernel reaching ``width`` samples beyond the block. A
    window is resampled from whole blocks with ``margin`` extra input samples on each side,
    so it sees exactly the input (zeros past the ends included) the whole-signal pass sees.
    ``length`` defaults to ``resampled_length(source.length)``; a smaller one trims.
    """

    def __init__(self, source: Signal, sample_rate: int, length: int | None = None) -> None:
        self.source, self.sample_rate, self.channels = source, int(sample_rate), source.channels
        g = math.gcd(source.sample_rate, self.sample_rate)
        self.down, self.up = source.sample_rate // g, self.sample_rate // g
        width = kernel_width(self.down, self.up)                        # the filter's reach
        self.margin = (-(-width // self.down) + 1) * self.down
        full = -(-source.length * self.up // self.down)
        self.length = full if length is None else min(int(length), full)

    def _read(self, start: int, stop: int) -> torch.Tensor:
        if self.up == self.down:
            return self.source.read(start, stop)
        first_block, last_block = start // self.up, -(-stop // self.up)
        lo = first_block * self.down - self.margin
        wav = self.source.read(lo, last_block * self.down + self.margin)
        out = resample(wav, self.source.sample_rate, self.sample_rate)
        offset = start - first_block * self.up + self.margin // self.down * self.up
        return out[:, offset:offset + stop - start]


class DecodedSignal(Signal):
    """The decoder's output for codes (C, n_q, F) of a mono model: C channels at the model's rate."""

    def __init__(self, model, codes: torch.Tensor, length: int | None = None) -> None:
        if model.channels != 1:
            raise ValueError(f"decoding files needs a mono model, this one has {model.channels} channels")
        self.model, self.codes = model, codes
        self.sample_rate, self.channels = model.sample_rate, codes.shape[0]
        full = codes.shape[-1] * model.hop_length
        self.length = full if length is None else int(length)

    def _read(self, start: int, stop: int) -> torch.Tensor:
        hop = self.model.hop_length
        f0, f1 = start // hop, -(-stop // hop)
        audio = decode_frames(self.model, self.codes, f0, f1)[:, 0]       # (C, (f1 - f0) * hop)
        return audio[:, start - f0 * hop:stop - f0 * hop]


# ---------------------------------------------------------------------------- chunked coding
def chunks(num_frames: int, chunk_frames: int) -> Iterator[tuple[int, int]]:
    """[f0, f1) frame ranges covering [0, num_frames): as few as chunks of at most chunk_frames
    allow, of equal size to within one frame (no short tail: each has >= chunk_frames / 2)."""
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    count = -(-num_frames // chunk_frames)
    for i in range(count):
        yield i * num_frames // count, (i + 1) * num_frames // count


def encode_frames(model, read: Callable[[int, int], torch.Tensor], num_frames: int,
                  n_q: int | None = None, chunk_frames: int = DEFAULT_CHUNK_FRAMES,
                  progress: bool = False) -> torch.Tensor:
    """Codes (B, n_q, num_frames) of the audio that ``read(start, stop) -> (B, channels, stop - start)``
    returns at the model's rate (zeros past the signal's end), one chunk plus context at a time.

    The B items (a file's channels) go through the model one at a time, so memory does not grow
    with their number and each is coded as it would be on its own.
    """
    left, right = receptive_field_frames(model.config)
    hop, pieces = model.hop_length, []
    with _progress(num_frames / model.frame_rate, "encoding", progress) as bar:
        for f0, f1 in chunks(num_frames, chunk_frames):
            c0, c1 = max(f0 - left, 0), min(f1 + right, num_frames)
            window = read(c0 * hop, c1 * hop)                                       # (B, channels, t)
            codes = torch.cat([model.encode(item[None], n_q) for item in window])   # (B, n_q, c1 - c0)
            pieces.append(codes[..., f0 - c0:f1 - c0])
            bar.update((f1 - f0) / model.frame_rate)
    return torch.cat(pieces, dim=-1)


def decode_frames(model, codes: torch.Tensor, f0: int, f1: int) -> torch.Tensor:
    """Audio (B, channels, (f1 - f0) * hop) of frames [f0, f1) of codes (B, n, F), decoded with
    context, one item at a time."""
    left, right = decoder_context_frames(model.config)
    c0, c1 = max(f0 - left, 0), min(f1 + right, codes.shape[-1])
    hop = model.hop_length
    audio = torch.cat([model.decode(item[None], length=(c1 - c0) * hop) for item in codes[..., c0:c1]])
    return audio[..., (f0 - c0) * hop:(f1 - c0) * hop]


def encode_signal(model, signal: Signal, n_q: int | None = None,
                  chunk_frames: int = DEFAULT_CHUNK_FRAMES, progress: bool = False) -> torch.Tensor:
    """A signal at the model's rate -> codes (C, n_q, F), each channel a separate mono stream."""
    if signal.sample_rate != model.sample_rate:
        raise ValueError(f"signal is at {signal.sample_rate} Hz, the model runs at {model.sample_rate} Hz")
    if model.channels != 1:
        raise ValueError(f"encoding files needs a mono model, this one has {model.channels} channels")
    return encode_frames(model, lambda a, b: signal.read(a, b).unsqueeze(1), model.frames(signal.length),
                         n_q, chunk_frames, progress)


def encode_chunked(model, wav: torch.Tensor, n_q: int | None = None,
                   chunk_frames: int = DEFAULT_CHUNK_FRAMES, progress: bool = False) -> torch.Tensor:
    """Chunked twin of ``model.encode``: wav (B, C, T) -> codes (B, n_q, ceil(T / hop)).

    Equal to ``model.encode(wav, n_q)`` as stated in this module's docstring; the original
    length is recorded as ``codes.num_samples``.
    """
    model.pad_to_frames(wav)                                     # same shape checks as model.encode
    length = wav.shape[-1]

    def read(start: int, stop: int) -> torch.Tensor:    # zeros past the end, like Codec.pad_to_frames
        window = wav[..., start:min(stop, length)]
        return nn.functional.pad(window, (0, stop - start - window.shape[-1]))

    codes = encode_frames(model, read, model.frames(length), n_q, chunk_frames, progress)
    codes.num_samples = length
    return codes


def decode_chunked(model, codes: torch.Tensor, length: int | None = None,
                   chunk_frames: int = DEFAULT_CHUNK_FRAMES, progress: bool = False) -> torch.Tensor:
    """Chunked twin of ``model.decode``: codes (B, n, F) -> wav (B, channels, T).

    T = length, else codes.num_samples, else F * hop. Matches ``model.decode`` as stated in
    this module's docstring.
    """
    length = getattr(codes, "num_samples", None) if length is None else length
    frames = codes.shape[-1]
    pieces = []
    with _progress(frames / model.frame_rate, "decoding", progress) as bar:
        for f0, f1 in chunks(frames, chunk_frames):
            pieces.append(decode_frames(model, codes, f0, f1))
            bar.update((f1 - f0) / model.frame_rate)
    audio = torch.cat(pieces, dim=-1)
    return audio if length is None else audio[..., :length]


# ---------------------------------------------------------------------------- writing
def write_signal(path: str | os.PathLike, signal: Signal, window: int | None = None,
                 subtype: str | None = None, progress: bool = False, overwrite: bool = True) -> None:
    """Write a signal to an audio file window by window, in the format named by the suffix.

    Like ``codec.audio.save_audio`` (same formats, PCM_16 default for WAV/FLAC, clipping to
    [-1, 1] for integer subtypes) but streaming; the file appears complete or not at all.
    """
    if signal.length <= 0:
        raise AudioError(f"refusing to write {path}: no samples")
    window = window or 10 * signal.sample_rate

    def blocks() -> Iterator[torch.Tensor]:
        with _progress(signal.duration, "writing", progress) as bar:
            for start in range(0, signal.length, window):
                block = signal.read(start, min(start + window, signal.length))      # (C, t)
                yield block
                bar.update(block.shape[1] / signal.sample_rate)

    write_audio_blocks(path, signal.sample_rate, signal.channels, blocks(), subtype, overwrite)


@contextmanager
def _progress(seconds: float, desc: str, enabled: bool):
    """A tqdm bar on stderr counting seconds of audio; a silent stand-in when not enabled."""
    with tqdm(total=seconds, desc=desc, unit="s", disable=not enabled, leave=False,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of audio "
                         "[{elapsed}<{remaining}]") as bar:
        yield bar
