"""The token file: a small versioned container for a codec's codes.

Layout of version 2, the one written (full description in docs/token_format.md)::

    MAGIC b"RVQT" | version u8 = 2 | header (7 unsigned LEB128 varints, then 3 strings, each a
    varint length and UTF-8 bytes) | payload (to the checksum) | crc32 u32 LE over every byte before it

Version 1 (still read, no longer written) carried the same fields as a JSON header:
MAGIC | version u8 = 1 | header_len u32 | JSON | payload_len u64 | payload | crc32 u32. Its ~250
bytes of overhead cost 0.49 kbps on a 4-second prompt; version 2's are 66 for speech16k.

The payload holds codes of shape (channels, n_q, num_frames), entropy-coded when the header
names an entropy model and bit-packed otherwise (see codec/entropy.py). The reader checks the
framing and the checksum before it parses anything, validates every header field, and never
allocates more than the file's size can justify; every problem is a :class:`TokenFileError`.
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Union, get_type_hints

import numpy as np

from codec.entropy import (
    PayloadError,
    decode_codes,
    encode_codes,
    max_coded_symbols,
    pack_codes,
    packed_size,
    unpack_codes,
)
from codec.fileio import atomic_write_bytes

MAGIC = b"RVQT"
FORMAT_VERSION = 2  # the version written; READ_VERSIONS are read
READ_VERSIONS = (1, 2)
MAX_HEADER_BYTES = 1 << 16
MAX_CHANNELS = 64          # each decodes to its own full-length signal
MAX_N_Q = 256
MAX_CODEBOOK_SIZE = 1 << 20
MAX_SAMPLE_RATE = 768_000  # = codec.audio.MAX_SAMPLE_RATE: no audio file or resampling goes higher
MAX_SAMPLES = 1 << 40      # num_samples, per channel (16 days at 768 kHz)
MAX_CODES = 1 << 31  # channels * n_q * num_frames, whatever the payload size
MAX_STRING_BYTES = 4096  # model name, fingerprint, entropy model id: each, as UTF-8

_PREFIX = struct.Struct("<4sBI")  # version 1: magic, version, header_len
_V2_PREFIX = len(MAGIC) + 1  # version 2: magic, version
_PAYLOAD_LEN = struct.Struct("<Q")
_CRC = struct.Struct("<I")

# An id -> (n_q, K) probabilities mapping, or a function returning None for unknown ids.
ProbsLookup = Union[Mapping[str, np.ndarray], Callable[[str], Union[np.ndarray, None]]]


class TokenFileError(ValueError):
    """A token file is malformed, or cannot be decoded with what the caller supplied."""


@dataclass
class TokenHeader:
    """What a token file says about its codes; stored as its header."""

    model_name: str
    model_fingerprint: str  # hash of the model's weights
    model_sample_rate: int  # rate the model ran at
    sample_rate: int  # rate of the original audio
    channels: int
    num_samples: int  # original length per channel, at sample_rate
    n_q: int  # codebooks stored (may be fewer than the model has)
    codebook_size: int
    num_frames: int
    entropy_model: str = ""  # entropy_model_id(counts) of the statistics used; "" = bit-packed

    @property
    def codes_shape(self) -> tuple[int, int, int]:
        """(channels, n_q, num_frames)."""
        return (self.channels, self.n_q, self.num_frames)

    @property
    def num_codes(self) -> int:
        return self.channels * self.n_q * self.num_frames


# (field, smallest, largest) for every integer field; strings are only type-checked.
_INT_BOUNDS = {
    "model_sample_rate": (1, MAX_SAMPLE_RATE),
    "sample_rate": (1, MAX_SAMPLE_RATE),
    "channels": (1, MAX_CHANNELS),
    "num_samples": (0, MAX_SAMPLES),
    "n_q": (1, MAX_N_Q),
    "codebook_size": (2, MAX_CODEBOOK_SIZE),
    "num_frames": (0, MAX_CODES),
}
_FIELD_TYPES: dict[str, type] = get_type_hints(TokenHeader)
# Version 2 stores the integer fields as varints in this order, then the string fields.
_V2_INTS = ("model_sample_rate", "sample_rate", "channels", "num_samples", "n_q", "codebook_size",
            "num_frames")
_V2_STRINGS = ("model_name", "model_fingerprint", "entropy_model")
_MAX_VARINT_BYTES = 10  # ceil(64 / 7)


# ---------------------------------------------------------------- header


def _check_header(header: TokenHeader) -> None:
    """Raise TokenFileError unless every field has the right type and a sane value."""
    for name, kind in _FIELD_TYPES.items():
        value = getattr(header, name)
        if type(value) is not kind:  # exact: rejects bool for int
            raise TokenFileError(f"header field {name!r} must be {kind.__name__}, got {value!r}")
    for name, (low, high) in _INT_BOUNDS.items():
        value = getattr(header, name)
        if not low <= value <= high:
            raise TokenFileError(f"header field {name!r} = {value} is outside [{low}, {high}]")
    if header.num_codes > MAX_CODES:
        raise TokenFileError(f"header claims {header.num_codes} codes, more than {MAX_CODES}")
    for name in _V2_STRINGS:
        try:
            size = len(getattr(header, name).encode("utf-8"))
        except UnicodeEncodeError as err:   # e.g. a path from argv that is not valid UTF-8
            raise TokenFileError(f"header field {name!r} cannot be stored as UTF-8: {err}") from err
        if size > MAX_STRING_BYTES:
            raise TokenFileError(f"header field {name!r} is {size} bytes of UTF-8, more than {MAX_STRING_BYTES}")


def _header_from_json(raw: bytes) -> TokenHeader:
    """Version 1: UTF-8 JSON object -> validated TokenHeader. Unknown keys are ignored."""
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise TokenFileError(f"header is not valid UTF-8 JSON: {err}") from err
    if not isinstance(fields, dict):
        raise TokenFileError(f"header must be a JSON object, got {type(fields).__name__}")
    missing = [name for name in _FIELD_TYPES if name not in fields]
    if missing:
        raise TokenFileError(f"header is missing fields: {', '.join(missing)}")
    header = TokenHeader(**{name: fields[name] for name in _FIELD_TYPES})
    _check_header(header)
    return header


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits a byte, least significant group first, high bit = more follow."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if not value:
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _read_varint(data: bytes, at: int, end: int, what: str) -> tuple[int, int]:
    """(value, next offset) of the canonical varint at data[at:end]; TokenFileError otherwise."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if at + i >= end:
            raise TokenFileError(f"header ends inside {what}")
        byte = data[at + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise TokenFileError(f"{what} is not a canonical varint (trailing zero byte)")
            return value, at + i + 1
    raise TokenFileError(f"{what} is a varint longer than {_MAX_VARINT_BYTES} bytes")


def _binary_header(header: TokenHeader) -> bytes:
    """Version 2's header: the integer fields as varints, then length-prefixed UTF-8 strings."""
    parts = [_varint(getattr(header, name)) for name in _V2_INTS]
    for name in _V2_STRINGS:
        raw = getattr(header, name).encode("utf-8")
        parts += [_varint(len(raw)), raw]
    return b"".join(parts)


def _header_from_binary(data: bytes, at: int, end: int) -> tuple[TokenHeader, int]:
    """Version 2: (validated header, offset after it) parsed from data[at:end]."""
    fields: dict[str, object] = {}
    for name in _V2_INTS:
        fields[name], at = _read_varint(data, at, end, f"header field {name!r}")
    for name in _V2_STRINGS:
        length, at = _read_varint(data, at, end, f"the length of header field {name!r}")
        if length > MAX_STRING_BYTES:
            raise TokenFileError(f"header field {name!r} claims {length} bytes, more than {MAX_STRING_BYTES}")
        if length > end - at:
            raise TokenFileError(
                f"header field {name!r} claims {length} bytes but only {end - at} remain "
                "before the checksum"
            )
        try:
            fields[name] = data[at : at + length].decode("utf-8")
        except UnicodeDecodeError as err:
            raise TokenFileError(f"header field {name!r} is not valid UTF-8: {err}") from err
        at += length
    header = TokenHeader(**fields)
    _check_header(header)
    return header, at


# ---------------------------------------------------------------- framing


def _frame(header: TokenHeader, payload: bytes) -> bytes:
    """Version 2: magic, version, binary header, payload, then the checksum of all of it."""
    body = b"".join([MAGIC, bytes([FORMAT_VERSION]), _binary_header(header), payload])
    return body + _CRC.pack(zlib.crc32(body))


def _check_crc(data: bytes, end: int) -> None:
    """Raise TokenFileError unless the u32 at data[end:end + 4] is the CRC32 of data[:end]."""
    (stored,) = _CRC.unpack_from(data, end)
    computed = zlib.crc32(data[:end])
    if stored != computed:
        raise TokenFileError(f"checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")


def _read_version(data: bytes) -> int:
    """The file's format version, after checking the magic; TokenFileError for unknown ones."""
    if not data.startswith(MAGIC):
        raise TokenFileError(f"not a token file: bad magic {bytes(data[:4])!r}, expected {MAGIC!r}")
    if len(data) < _V2_PREFIX:
        raise TokenFileError(f"truncated: {len(data)} bytes, the magic and version need {_V2_PREFIX}")
    version = data[len(MAGIC)]
    if version > FORMAT_VERSION:
        raise TokenFileError(
            f"token file format version {version} is newer than this reader "
            f"(which reads up to version {FORMAT_VERSION})"
        )
    if version not in READ_VERSIONS:
        raise TokenFileError(f"unsupported token file format version {version}")
    return version


def _unframe(data: bytes) -> tuple[TokenHeader, bytes]:
    """File bytes of either version -> (validated header, payload bytes).

    The checksum is verified before any header field is parsed.
    """
    if _read_version(data) == 1:
        header_bytes, payload = _unframe_v1(data)
        return _header_from_json(header_bytes), payload
    if len(data) < _V2_PREFIX + _CRC.size:
        raise TokenFileError(f"truncated: {len(data)} bytes, too short to hold the checksum")
    end = len(data) - _CRC.size
    _check_crc(data, end)
    header, payload_start = _header_from_binary(data, _V2_PREFIX, end)
    return header, data[payload_start:end]


def _unframe_v1(data: bytes) -> tuple[bytes, bytes]:
    """Version 1 file bytes -> (header bytes, payload bytes), checking lengths and the checksum."""
    if len(data) < _PREFIX.size:
        raise TokenFileError(f"truncated: {len(data)} bytes, the fixed prefix needs {_PREFIX.size}")
    _, _, header_len = _PREFIX.unpack_from(data)
    if header_len > MAX_HEADER_BYTES:
        raise TokenFileError(f"header length {header_len} exceeds the limit {MAX_HEADER_BYTES}")
    payload_start = _PREFIX.size + header_len + _PAYLOAD_LEN.size
    if payload_start + _CRC.size > len(data):
        raise TokenFileError(
            f"header claims {header_len} bytes but the file ends first ({len(data)} bytes)"
        )
    (payload_len,) = _PAYLOAD_LEN.unpack_from(data, payload_start - _PAYLOAD_LEN.size)
    payload_end = payload_start + payload_len
    if payload_end + _CRC.size > len(data):
        raise TokenFileError(
            f"payload claims {payload_len} bytes but only "
            f"{len(data) - payload_start - _CRC.size} remain before the checksum"
        )
    if payload_end + _CRC.size < len(data):
        raise TokenFileError(f"{len(data) - payload_end - _CRC.size} bytes of trailing garbage")
    _check_crc(data, payload_end)
    return data[_PREFIX.size : _PREFIX.size + header_len], data[payload_start:payload_end]


# ---------------------------------------------------------------- payload


def _lookup_probs(header: TokenHeader, probs_lookup: ProbsLookup | None) -> np.ndarray:
    """The (>= n_q, K) probabilities the file was coded with, or TokenFileError naming them."""
    needed = header.entropy_model
    if probs_lookup is None:
        probs = None
    elif isinstance(probs_lookup, Mapping):
        probs = probs_lookup.get(needed)
    elif callable(probs_lookup):
        probs = probs_lookup(needed)
    else:
        raise TypeError("probs_lookup must be a mapping id -> probs or a function of the id")
    if probs is None:
        raise TokenFileError(
            f"token file is entropy-coded with entropy model {needed!r}; "
            "its symbol statistics were not supplied"
        )
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < header.n_q or probs.shape[1] != header.codebook_size:
        raise TokenFileError(
            f"entropy model {needed!r} has shape {probs.shape}; the file needs "
            f"at least ({header.n_q}, {header.codebook_size})"
        )
    return probs


def _check_payload_size(header: TokenHeader, payload_len: int, probs: np.ndarray | None = None) -> None:
    """Raise TokenFileError unless the payload can hold exactly/at most the header's codes.

    For an entropy-coded payload, probs (the model it was coded with) tighten the bound from
    the format's 512 codes per byte to the model's own (about 1.2 for speech16k)."""
    if not header.entropy_model:
        expected = packed_size(header.num_codes, header.codebook_size)
        if payload_len != expected:
            raise TokenFileError(
                f"bit-packed payload is {payload_len} bytes; {header.num_codes} codes "
                f"of codebook size {header.codebook_size} need exactly {expected}"
            )
        return
    limit = max_coded_symbols(payload_len, probs, None if probs is None else header.n_q)
    if header.num_codes > limit:
        raise TokenFileError(
            f"header claims {header.num_codes} codes; an entropy-coded payload of "
            f"{payload_len} bytes holds at most {limit}"
        )


def _decode_payload(
    header: TokenHeader, payload: bytes, probs_lookup: ProbsLookup | None
) -> np.ndarray:
    """payload -> (channels, n_q, num_frames) int64 codes."""
    _check_payload_size(header, len(payload))
    try:
        if not header.entropy_model:
            return unpack_codes(payload, header.codes_shape, header.codebook_size)
        probs = _lookup_probs(header, probs_lookup)
        _check_payload_size(header, len(payload), probs)
        return decode_codes(payload, header.codes_shape, probs)
    except PayloadError as err:
        raise TokenFileError(str(err)) from err


# ---------------------------------------------------------------- public API


def encode_token_bytes(
    header: TokenHeader, codes: np.ndarray, stats_probs: np.ndarray | None = None
) -> bytes:
    """Header and (channels, n_q, num_frames) codes -> the token file's bytes.

    With stats_probs ((n_q_model >= n_q, K) probabilities) the payload is entropy-coded and
    header.entropy_model must name them (entropy_model_id of their counts); without, it is
    bit-packed and header.entropy_model must be "".
    """
    _check_header(header)
    codes = np.asarray(codes)
    if codes.shape != header.codes_shape:
        raise ValueError(f"codes have shape {codes.shape}, header says {header.codes_shape}")
    if (stats_probs is None) != (header.entropy_model == ""):
        raise ValueError("header.entropy_model must be set exactly when stats_probs is given")
    if stats_probs is None:
        payload = pack_codes(codes, header.codebook_size)
    else:
        if np.asarray(stats_probs).shape[1:] != (header.codebook_size,):
            raise ValueError(
                f"stats_probs of shape {np.shape(stats_probs)} do not match "
                f"codebook size {header.codebook_size}"
            )
        payload = encode_codes(codes, stats_probs)
    _check_payload_size(header, len(payload), stats_probs)  # what we write, we can read
    return _frame(header, payload)


def decode_token_header(data: bytes) -> TokenHeader:
    """The header of a token file's bytes, after checking framing and checksum; the payload is not decoded."""
    return _unframe(bytes(data))[0]


def decode_token_bytes(
    data: bytes, probs_lookup: ProbsLookup | None = None
) -> tuple[TokenHeader, np.ndarray]:
    """Twin of :func:`encode_token_bytes`: bytes -> (header, (channels, n_q, frames) int64).

    probs_lookup maps an entropy model id to its (n_q_model, K) probabilities; it is needed
    only for entropy-coded files. Raises TokenFileError for anything malformed.
    """
    header, payload = _unframe(bytes(data))
    return header, _decode_payload(header, payload, probs_lookup)


def write_token_file(
    path: str | os.PathLike,
    header: TokenHeader,
    codes: np.ndarray,
    stats_probs: np.ndarray | None = None,
    overwrite: bool = True,
) -> None:
    """Write a token file atomically (temp file beside it, then rename); overwrite=False never replaces a file."""
    atomic_write_bytes(path, encode_token_bytes(header, codes, stats_probs), overwrite)


def read_token_file(
    path: str | os.PathLike, probs_lookup: ProbsLookup | None = None
) -> tuple[TokenHeader, np.ndarray]:
    """Read a token file: -> (header, (channels, n_q, num_frames) int64 codes)."""
    return decode_token_bytes(Path(path).read_bytes(), probs_lookup)


def token_payload(data: bytes) -> bytes:
    """The payload of a token file's bytes (either version), after checking framing, checksum and header."""
    return _unframe(bytes(data))[1]
