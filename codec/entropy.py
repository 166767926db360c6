"""Payload coders for token files: per-codebook symbol statistics, range coding, bit-packing.

Codes are integer arrays of shape (C, n_q, F): channels, codebooks, frames. Two payload
encodings turn them into bytes and back:

* entropy-coded: a range coder (``constriction``) driven by one categorical model per
  codebook, whose probabilities come from symbol counts gathered in training;
* bit-packed: ``ceil(log2(K))`` bits per code, MSB first, zero-padded to a whole byte.

Both decoders raise :class:`PayloadError` (a ``ValueError``) on malformed data; the token-file
reader turns it into its own error. See docs/token_format.md for the byte-level description.
"""
from __future__ import annotations

import hashlib
import math

import constriction
import numpy as np

# Every entropy-coded symbol costs at least MIN_BITS_PER_SYMBOL bits, because no symbol may be
# more probable than MAX_SYMBOL_PROBABILITY (-log2(0.98) = 0.029 bits > 1/64). A reader can
# therefore bound how many symbols a payload of a given size can hold, before decoding it.
MAX_SYMBOL_PROBABILITY = 0.98
MIN_BITS_PER_SYMBOL = 1.0 / 64.0
RANGE_CODER_STATE_BITS = 64  # the information a range decoder holds beyond the words it has read
RANGE_CODER_SLACK_SYMBOLS = 4096  # RANGE_CODER_STATE_BITS at MIN_BITS_PER_SYMBOL: symbols a coder
                                  # may still decode once it has read its last word
_QUANTISATION_MARGIN = 2.0**-12   # constriction quantises probabilities to 24 bits; far above that
DECODE_CHUNK = 1 << 16            # symbols decoded between two checks for the end of the payload


class PayloadError(ValueError):
    """A payload cannot be decoded into codes of the requested shape."""


# ---------------------------------------------------------------- symbol statistics


def _as_counts(counts: np.ndarray) -> np.ndarray:
    """Validate counts and return them as a C-contiguous int64 (n_q, K) array.

    Float counts (e.g. EMA cluster sizes) are rounded to the nearest integer.
    """
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[0] < 1 or counts.shape[1] < 2:
        raise ValueError(f"counts must have shape (n_q >= 1, K >= 2), got {counts.shape}")
    if not (np.issubdtype(counts.dtype, np.integer) or np.issubdtype(counts.dtype, np.floating)):
        raise ValueError(f"counts must be numeric, got dtype {counts.dtype}")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("counts must be finite and non-negative")
    return np.ascontiguousarray(np.rint(counts).astype(np.int64))


def count_symbols(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """How often each code occurs in each codebook.

    codes: (..., n_q, F) integers in [0, codebook_size)  ->  (n_q, K) int64 counts.
    """
    codes = np.asarray(codes)
    n_q = codes.shape[-2]
    per_codebook = np.moveaxis(codes, -2, 0).reshape(n_q, -1)  # (n_q, N)
    _check_code_range(per_codebook, codebook_size)
    offsets = np.arange(n_q, dtype=np.int64)[:, None] * codebook_size
    flat = (per_codebook.astype(np.int64) + offsets).ravel()
    return np.bincount(flat, minlength=n_q * codebook_size).reshape(n_q, codebook_size)


def probabilities_from_counts(counts: np.ndarray) -> np.ndarray:
    """Laplace-smoothed symbol probabilities: (counts + 1) / (sum + K) per codebook.

    counts: (n_q, K) non-negative  ->  (n_q, K) float64, every entry > 0, rows sum to 1.
    """
    smoothed = _as_counts(counts).astype(np.float64) + 1.0  # (n_q, K)
    return smoothed / smoothed.sum(axis=1, keepdims=True)


def entropy_model_id(counts: np.ndarray) -> str:
    """A short name for a set of counts: first 16 hex chars of sha256(shape, int64 LE bytes)."""
    counts = _as_counts(counts)
    digest = hashlib.sha256(f"{counts.shape[0]}x{counts.shape[1]}:".encode("ascii"))
    digest.update(counts.astype("<i8").tobytes())
    return digest.hexdigest()[:16]


def min_bits_per_symbol(probs: np.ndarray | None = None, n_q: int | None = None) -> float:
    """The fewest bits any symbol can cost: the bound behind :func:`max_coded_symbols`.

    Without probs, the format's floor (MIN_BITS_PER_SYMBOL). With probs ((n_q_model, K)), the
    cost of the likeliest symbol of the first n_q codebooks as the coder quantises it, less a
    margin for that quantisation, and never below the floor: a nearly flat 1024-symbol model
    gives about 6.6 bits, so a payload can claim some 8x its bits in codes, not 512x.
    """
    if probs is None:
        return MIN_BITS_PER_SYMBOL
    probs = np.asarray(probs, dtype=np.float64)
    rows = probs[: probs.shape[0] if n_q is None else n_q]
    top = max(float(np.max(_coder_probabilities(row))) for row in rows)
    top = min(1.0, top + _QUANTISATION_MARGIN)
    return max(MIN_BITS_PER_SYMBOL, -math.log2(top))


def max_coded_symbols(payload_bytes: int, probs: np.ndarray | None = None, n_q: int | None = None) -> int:
    """The most symbols an entropy-coded payload of this many bytes can hold.

    With the probabilities it was coded with, the bound is the model's own (see
    :func:`min_bits_per_symbol`); without them, the format's loose one.
    """
    bits = min_bits_per_symbol(probs, n_q)
    return int(payload_bytes * 8 / bits) + math.ceil(RANGE_CODER_STATE_BITS / bits)


# ---------------------------------------------------------------- entropy coding


def _coder_probabilities(row: np.ndarray) -> np.ndarray:
    """Normalise one codebook's probabilities and cap the largest at MAX_SYMBOL_PROBABILITY.

    row: (K,) positive floats  ->  (K,) float64 summing to 1. Encoder and decoder both call
    this, so they quantise exactly the same distribution.
    """
    p = np.asarray(row, dtype=np.float64)
    p = p / p.sum()
    top = int(np.argmax(p))
    if p[top] > MAX_SYMBOL_PROBABILITY:
        rest = np.delete(p, top)
        rest = rest / rest.sum() * (1.0 - MAX_SYMBOL_PROBABILITY)
        p = np.insert(rest, top, MAX_SYMBOL_PROBABILITY)
    return p


def _codebook_models(probs: np.ndarray, n_q: int) -> list:
    """One constriction categorical model per codebook, from the first n_q rows of probs."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] < n_q or probs.shape[1] < 2:
        raise ValueError(f"probs of shape {probs.shape} cannot model {n_q} codebooks")
    if not np.all(np.isfinite(probs)) or np.any(probs[:n_q] <= 0):
        raise ValueError("probs must be finite and strictly positive")
    categorical = constriction.stream.model.Categorical
    return [categorical(_coder_probabilities(probs[q]), perfect=False) for q in range(n_q)]


def encode_codes(codes: np.ndarray, probs: np.ndarray) -> bytes:
    """Range-code codes with one model per codebook.

    codes: (C, n_q, F) in [0, K); probs: (n_q_model >= n_q, K)  ->  bytes (a whole number of
    little-endian uint32 words). Codebook q's symbols are coded in (channel, frame) order,
    codebooks one after the other.
    """
    codes = np.asarray(codes)
    if codes.ndim != 3:
        raise ValueError(f"codes must have shape (C, n_q, F), got {codes.shape}")
    models = _codebook_models(probs, codes.shape[1])
    _check_code_range(codes, np.asarray(probs).shape[1])
    encoder = constriction.stream.queue.RangeEncoder()
    for q, model in enumerate(models):
        encoder.encode(np.ascontiguousarray(codes[:, q, :].ravel(), dtype=np.int32), model)
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_codes(data: bytes, shape: tuple[int, int, int], probs: np.ndarray) -> np.ndarray:
    """Twin of :func:`encode_codes`: bytes -> (C, n_q, F) int64 codes.

    Raises PayloadError when the data cannot hold that many symbols or does not decode cleanly.
    """
    channels, n_q, frames = shape
    per_codebook = channels * frames
    if len(data) % 4:
        raise PayloadError(f"entropy-coded payload of {len(data)} bytes is not whole 32-bit words")
    models = _codebook_models(probs, n_q)
    limit = max_coded_symbols(len(data), probs, n_q)
    if per_codebook * n_q > limit:
        raise PayloadError(f"{per_codebook * n_q} codes cannot fit in {len(data)} coded bytes "
                           f"(this entropy model codes at most {limit})")
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)  # (len(data) // 4,)
    decoder = constriction.stream.queue.RangeDecoder(words)
    codes = np.empty((n_q, per_codebook), dtype=np.int64)  # codebook-major, as coded; <= limit codes
    try:
        after_end = 0  # symbols decoded since the decoder read its last word
        for q, model in enumerate(models):
            for start in range(0, per_codebook, DECODE_CHUNK):
                stop = min(start + DECODE_CHUNK, per_codebook)
                exhausted = decoder.maybe_exhausted()
                codes[q, start:stop] = decoder.decode(model, stop - start)
                if exhausted:
                    after_end += stop - start
                    if after_end > RANGE_CODER_SLACK_SYMBOLS:
                        raise PayloadError(f"entropy-coded payload ends before its {per_codebook * n_q} codes")
        exhausted = decoder.maybe_exhausted()
    except PayloadError:
        raise
    except Exception as err:  # constriction's own error types are not part of its API
        raise PayloadError(f"entropy-coded payload is corrupt: {err}") from err
    if not exhausted:
        raise PayloadError("entropy-coded payload has data left after the last code")
    codes = codes.reshape(n_q, channels, frames)
    _check_code_range(codes, np.asarray(probs).shape[1], error=PayloadError)
    codes = np.ascontiguousarray(codes.transpose(1, 0, 2))  # (C, n_q, F)
    # The range decoder can end "exhausted" with one spare word after the last symbol; only the
    # writer's own bytes are accepted, so every list of codes has exactly one payload.
    if encode_codes(codes, probs) != data:
        raise PayloadError("entropy-coded payload has data left after the last code "
                           "(it is not the encoding of the codes it decodes to)")
    return codes


# ---------------------------------------------------------------- bit-packing

_WORD_BITS = 32  # codes are packed from, and unpacked into, big-endian uint32 words


def bits_per_code(codebook_size: int) -> int:
    """ceil(log2(K)): the bits one code occupies when bit-packed (K >= 2)."""
    if codebook_size < 2 or codebook_size > 2**_WORD_BITS:
        raise ValueError(f"codebook_size must be in [2, 2**{_WORD_BITS}], got {codebook_size}")
    return (codebook_size - 1).bit_length()


def packed_size(num_codes: int, codebook_size: int) -> int:
    """Bytes a bit-packed payload of num_codes codes occupies."""
    return (num_codes * bits_per_code(codebook_size) + 7) // 8


def _word_bits(words: np.ndarray) -> np.ndarray:
    """(N,) uint32 -> (N, 32) bits, most significant first."""
    return np.unpackbits(words.astype(">u4").view(np.uint8).reshape(-1, 4), axis=1)


def pack_codes(codes: np.ndarray, codebook_size: int) -> bytes:
    """codes: any shape, ints in [0, K)  ->  bytes, C-order, bits_per_code(K) bits each."""
    bits = bits_per_code(codebook_size)
    flat = np.asarray(codes).ravel()
    _check_code_range(flat, codebook_size)
    code_bits = _word_bits(flat.astype(np.uint32))[:, _WORD_BITS - bits :]  # (N, bits)
    return np.packbits(code_bits.ravel()).tobytes()


def unpack_codes(data: bytes, shape: tuple[int, ...], codebook_size: int) -> np.ndarray:
    """Twin of :func:`pack_codes`: bytes -> int64 codes of the given shape.

    Raises PayloadError if the length is not exact, padding bits are set, or a code >= K.
    """
    bits = bits_per_code(codebook_size)
    num_codes = int(np.prod(shape, dtype=np.int64))
    if len(data) != packed_size(num_codes, codebook_size):
        raise PayloadError(
            f"bit-packed payload is {len(data)} bytes, expected "
            f"{packed_size(num_codes, codebook_size)} for {num_codes} codes of {bits} bits"
        )
    stream = np.unpackbits(np.frombuffer(data, dtype=np.uint8))
    if stream[num_codes * bits :].any():
        raise PayloadError("bit-packed payload has non-zero padding bits")
    code_bits = np.zeros((num_codes, _WORD_BITS), dtype=np.uint8)  # (N, 32)
    code_bits[:, _WORD_BITS - bits :] = stream[: num_codes * bits].reshape(num_codes, bits)
    codes = np.packbits(code_bits, axis=1).view(">u4").ravel().astype(np.int64)
    _check_code_range(codes, codebook_size, error=PayloadError)
    return codes.reshape(shape)


# ---------------------------------------------------------------- shared checks


def _check_code_range(codes: np.ndarray, codebook_size: int, error: type = ValueError) -> None:
    """Raise `error` unless codes are integers in [0, codebook_size)."""
    if not np.issubdtype(codes.dtype, np.integer):
        raise error(f"codes must be integers, got dtype {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise error(f"codes must lie in [0, {codebook_size}), got [{codes.min()}, {codes.max()}]")
