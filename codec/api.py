"""File-level API: audio files to token files and back, the twins of ``codec encode/decode``.

    import codec
    header = codec.encode_file("talk.flac", "talk.rvqt", model="speech16k", kbps=3)
    codec.decode_file("talk.rvqt", "talk.wav")           # original rate, channels and length
    tokens = codec.read_tokens("talk.rvqt")               # header + codes (C, n_q, F)
    codec.write_tokens("copy.rvqt", tokens.codes, model,   # codes from model.encode(...) or a file
                       sample_rate=tokens.header.sample_rate, num_samples=tokens.header.num_samples)

Any input soundfile reads, at any rate (resampled to the model's and back) and with any number
of channels (each one coded as a separate mono stream). Files of any length are processed in
chunks in bounded memory (see ``codec.streaming``). Outputs are written atomically and never
overwrite an existing file unless ``force=True``. Token files name the model that made them
(``model_name``: the bundled name or the path given, and its fingerprint); decoding with a
different model is refused. The token container is described in docs/token_format.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from codec.audio import AudioInfo, audio_format, resampled_length
from codec.checkpoint import CheckpointError
from codec.entropy import entropy_model_id, probabilities_from_counts
from codec.model import Codec
from codec.streaming import (
    DEFAULT_CHUNK_FRAMES,
    DecodedSignal,
    FileSignal,
    ResampledSignal,
    encode_signal,
    write_signal,
)
from codec.tokenfile import (
    TokenFileError,
    TokenHeader,
    decode_token_bytes,
    decode_token_header,
    write_token_file,
)

ModelLike = Codec | str | os.PathLike


class ModelMismatchError(ValueError):
    """Token file and model do not belong together (fingerprint or sample rate differ)."""


@dataclass
class Tokens:
    """A token file's contents. ``codes`` (C, n_q, F) carries ``num_samples``, the length at the
    model's rate, so ``model.decode(tokens.codes)`` gives (C, 1, T) audio of the right length."""

    header: TokenHeader
    codes: torch.Tensor


# ---------------------------------------------------------------------------- models
def resolve_model(model: ModelLike) -> tuple[Codec, str]:
    """(model, name to store): a Codec as is (named by its config), else ``codec.load(name or path)``."""
    if isinstance(model, Codec):
        return model, model.config.name
    from codec import load
    return load(model), str(model)


def choose_n_q(model: Codec, n_q: int | None = None, kbps: float | None = None) -> int:
    """Codebooks to use: n_q as given, or the most whose nominal bitrate fits in kbps, else all."""
    if n_q is not None and kbps is not None:
        raise ValueError("give n_q or kbps, not both")
    if kbps is not None:
        fitting = [q for q in range(1, model.n_q + 1) if model.bitrate(q) <= kbps * 1000 + 1e-9]
        if not fitting:
            offered = ", ".join(f"{model.bitrate(q) / 1000:g}" for q in range(1, model.n_q + 1))
            raise ValueError(f"no bitrate of this model fits in {kbps:g} kbps; "
                             f"it offers {offered} kbps (n_q 1 to {model.n_q})")
        return fitting[-1]
    if n_q is None:
        return model.n_q
    if not 1 <= n_q <= model.n_q:
        raise ValueError(f"n_q must be between 1 and {model.n_q} for this model, got {n_q}")
    return int(n_q)


def _entropy_stats(model: Codec) -> tuple[np.ndarray | None, str]:
    """(probabilities (n_q, K), their id) from the model's symbol counts; (None, "") when it has none."""
    counts = model.symbol_counts.detach().cpu().numpy()
    if counts.sum() == 0:
        return None, ""
    return probabilities_from_counts(counts), entropy_model_id(counts)


def _require_quantizer(model: Codec, name: str) -> None:
    if not model.is_quantized:
        raise ValueError(f"model {name!r} is a {model.config.bottleneck!r} model; "
                         "token files need a quantizing model ('vq' or 'rvq')")


def check_model(header: TokenHeader, model: Codec, name: str) -> None:
    """Raise ModelMismatchError unless ``model`` is the one that made the token file."""
    fingerprint = model.fingerprint()
    # Token files written before the fingerprint left out the training-only EMA sums carry the
    # digest of the full state, which a model loaded from its full (not inference-only) file still has.
    if header.model_fingerprint not in (fingerprint, model.full_fingerprint()):
        raise ModelMismatchError(
            f"the token file was made by model {header.model_name!r} (fingerprint "
            f"{header.model_fingerprint}), not by model {name!r} (fingerprint {fingerprint})")
    if header.model_sample_rate != model.sample_rate or header.codebook_size != model.codebook_size \
            or header.n_q > model.n_q:
        raise ModelMismatchError(
            f"model {name!r} ({model.sample_rate} Hz, {model.n_q} codebooks of {model.codebook_size}) "
            f"cannot decode this token file ({header.model_sample_rate} Hz, {header.n_q} codebooks "
            f"of {header.codebook_size})")


# ---------------------------------------------------------------------------- token files
def read_header(path: str | os.PathLike) -> TokenHeader:
    """A token file's header, after checking the framing and checksum; the payload is not decoded."""
    return decode_token_header(_read_bytes(path))


def read_tokens(path: str | os.PathLike, model: ModelLike | None = None) -> Tokens:
    """Read a token file -> Tokens(header, codes (C, n_q, F) int64).

    ``model`` (a Codec, a bundled name or a path; default: the one the header names) must be
    the model that wrote the file; its symbol statistics decode an entropy-coded payload.
    """
    return _load_tokens(path, model)[0]


def _load_tokens(path: str | os.PathLike, model: ModelLike | None) -> tuple[Tokens, Codec]:
    """(tokens, the model resolved for them): header first, then the model, then the payload."""
    data = _read_bytes(path)
    header = decode_token_header(data)
    model, name = _header_model(header) if model is None else resolve_model(model)
    return _decode_tokens(data, header, model, name), model


def _decode_tokens(data: bytes, header: TokenHeader, model: Codec, name: str) -> Tokens:
    check_model(header, model, name)
    probs, stats_id = _entropy_stats(model)
    _, codes = decode_token_bytes(data, {stats_id: probs} if probs is not None else None)
    codes = torch.from_numpy(codes)
    codes.num_samples = model_rate_length(header)
    if model.frames(codes.num_samples) != header.num_frames:
        raise TokenFileError(f"header says {header.num_frames} frames, but {header.num_samples} "
                             f"samples need {model.frames(codes.num_samples)}")
    return Tokens(header, codes)


def write_tokens(path: str | os.PathLike, codes: torch.Tensor, model: ModelLike,
                 sample_rate: int | None = None, num_samples: int | None = None,
                 force: bool = False) -> TokenHeader:
    """Write codes (C, n_q, F) of ``model`` to a token file; returns its header.

    ``sample_rate`` and ``num_samples`` describe the original audio (default: the model's rate
    and ``codes.num_samples``, else F * hop_length). Entropy-coded when the model has symbol
    statistics, bit-packed otherwise.
    """
    model, name = resolve_model(model)
    _require_quantizer(model, name)
    check_output(path, force)
    if codes.dim() != 3 or not 1 <= codes.shape[1] <= model.n_q:
        raise ValueError(f"codes must have shape (channels, n_q <= {model.n_q}, frames), got {tuple(codes.shape)}")
    sample_rate = sample_rate or model.sample_rate
    if num_samples is None:
        num_samples = getattr(codes, "num_samples", codes.shape[-1] * model.hop_length)
        num_samples = resampled_length(num_samples, model.sample_rate, sample_rate)
    expected = model.frames(resampled_length(num_samples, sample_rate, model.sample_rate))
    if expected != codes.shape[-1]:       # the reader would refuse such a file
        raise ValueError(f"{num_samples} samples at {sample_rate} Hz make {expected} frames, "
                         f"but the codes have {codes.shape[-1]}")
    return _write(path, model, name, codes, sample_rate, num_samples, force)


def token_header(model: Codec, name: str, codes: torch.Tensor, sample_rate: int,
                 num_samples: int) -> tuple[TokenHeader, np.ndarray | None]:
    """The header for codes (C, n_q, F) of ``model`` and the probabilities to entropy-code them
    with (None: the model has no symbol statistics, the payload is bit-packed)."""
    probs, stats_id = _entropy_stats(model)
    channels, n_q, frames = codes.shape
    header = TokenHeader(model_name=name, model_fingerprint=model.fingerprint(),
                         model_sample_rate=model.sample_rate, sample_rate=int(sample_rate),
                         channels=channels, num_samples=int(num_samples), n_q=n_q,
                         codebook_size=model.codebook_size, num_frames=frames, entropy_model=stats_id)
    return header, probs


def _write(path, model: Codec, name: str, codes: torch.Tensor, sample_rate: int,
           num_samples: int, force: bool) -> TokenHeader:
    header, probs = token_header(model, name, codes, sample_rate, num_samples)
    write_token_file(path, header, codes.cpu().numpy(), probs, overwrite=force)
    return header


def model_rate_length(header: TokenHeader) -> int:
    """Samples per channel the model saw: the original length resampled to the model's rate."""
    return resampled_length(header.num_samples, header.sample_rate, header.model_sample_rate)


# ---------------------------------------------------------------------------- files
def encode_file(in_path: str | os.PathLike, out_path: str | os.PathLike, model: ModelLike = "speech16k",
                n_q: int | None = None, kbps: float | None = None, force: bool = False,
                progress: bool = False, chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> TokenHeader:
    """Encode an audio file into a token file; returns the header written.

    ``n_q`` codebooks, or the most whose nominal bitrate (``model.bitrate``, per channel) fits
    in ``kbps``, or all of them. ``progress`` shows a bar on stderr.
    """
    source = FileSignal(in_path)
    check_output(out_path, force)
    model, name = resolve_model(model)
    _require_quantizer(model, name)
    n_q = choose_n_q(model, n_q, kbps)
    signal = ResampledSignal(source, model.sample_rate)
    codes = encode_signal(model, signal, n_q, chunk_frames, progress)        # (C, n_q, F)
    check_output(out_path, force)                                            # still free?
    return _write(out_path, model, name, codes, source.sample_rate, source.length, force)


def decode_file(in_path: str | os.PathLike, out_path: str | os.PathLike, model: ModelLike | None = None,
                force: bool = False, model_rate: bool = False, progress: bool = False,
                chunk_frames: int = DEFAULT_CHUNK_FRAMES) -> AudioInfo:
    """Decode a token file into an audio file (format from the suffix); returns what was written.

    The original sample rate, channels and length are restored (``model_rate=True`` keeps the
    model's rate instead). ``model`` defaults to the one the token file names.
    """
    out_path = Path(out_path)
    check_output(out_path, force)
    audio_format(out_path)                                   # unknown suffix: fail before any work
    tokens, model = _load_tokens(in_path, model)
    signal = DecodedSignal(model, tokens.codes, tokens.codes.num_samples)
    if not model_rate:
        signal = ResampledSignal(signal, tokens.header.sample_rate, tokens.header.num_samples)
    window = chunk_frames * model.hop_length * signal.sample_rate // model.sample_rate
    write_signal(out_path, signal, window=max(window, 1), progress=progress, overwrite=force)
    return AudioInfo(signal.sample_rate, signal.length, signal.channels)


def check_output(path: str | os.PathLike, force: bool) -> None:
    """Raise FileExistsError / OSError unless ``path`` can be (over)written."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"output is a folder: {path}")
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force (force=True) to overwrite it")
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {path}: folder {parent} is not writable")


def _read_bytes(path: str | os.PathLike) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise TokenFileError(f"no such token file: {path}" if not path.exists() else f"not a file: {path}")
    return path.read_bytes()


def _header_model(header: TokenHeader) -> tuple[Codec, str]:
    """The model a token file names, or CheckpointError telling the user to pass one."""
    try:
        return resolve_model(header.model_name)
    except CheckpointError as err:
        raise CheckpointError(f"the token file names model {header.model_name!r} (fingerprint "
                              f"{header.model_fingerprint}), which cannot be loaded: {err}; "
                              "pass the model with --model") from None
