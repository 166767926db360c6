"""Token file container and its payload coders (codec/tokenfile.py, codec/entropy.py)."""
from __future__ import annotations

import dataclasses
import json
import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codec import tokenfile
from tests.helpers import run_with_memory_headroom
from codec.entropy import (
    PayloadError,
    bits_per_code,
    count_symbols,
    entropy_model_id,
    max_coded_symbols,
    pack_codes,
    probabilities_from_counts,
    unpack_codes,
)
from codec.tokenfile import (
    MAGIC,
    TokenFileError,
    TokenHeader,
    decode_token_bytes,
    encode_token_bytes,
    read_token_file,
    write_token_file,
)

FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FAKE_ID = "feedfacefeedface"  # an entropy model id no real counts need to have


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def make_header(
    channels: int = 1, n_q: int = 2, K: int = 1024, frames: int = 5, entropy_model: str = ""
) -> TokenHeader:
    return TokenHeader(
        model_name="speech16k",
        model_fingerprint="0123abcd",
        model_sample_rate=16000,
        sample_rate=44100,
        channels=channels,
        num_samples=frames * 320 + 7,
        n_q=n_q,
        codebook_size=K,
        num_frames=frames,
        entropy_model=entropy_model,
    )


def skewed_counts(rng: np.random.Generator, n_q: int, K: int) -> np.ndarray:
    """(n_q, K) non-uniform counts with some zeros."""
    counts = (rng.pareto(1.0, size=(n_q, K)) * 100).astype(np.int64)
    counts[:, rng.integers(0, K, size=max(1, K // 4))] = 0
    return counts


def frame_v1(header: bytes, payload: bytes, magic: bytes = MAGIC, version: int = 1) -> bytes:
    """An independent writer of version 1's layout (docs/token_format.md): JSON header bytes as given."""
    body = magic + bytes([version]) + struct.pack("<I", len(header)) + header
    body += struct.pack("<Q", len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


V2_INTS = ["model_sample_rate", "sample_rate", "channels", "num_samples", "n_q", "codebook_size",
           "num_frames"]
V2_STRINGS = ["model_name", "model_fingerprint", "entropy_model"]


def slow_varint(value: int) -> bytes:
    """Reference LEB128: the binary digits in groups of 7 from the least significant end."""
    bits = format(value, "b")
    groups = [bits[max(0, end - 7) : end] for end in range(len(bits), 0, -7)]
    return bytes(int(group, 2) | (0x80 if i < len(groups) - 1 else 0) for i, group in enumerate(groups))


def v2_header(fields: dict) -> bytes:
    """Version 2's header of a field mapping (values need not be in range)."""
    out = b"".join(slow_varint(fields[name]) for name in V2_INTS)
    for name in V2_STRINGS:
        raw = fields[name].encode("utf-8")
        out += slow_varint(len(raw)) + raw
    return out


def frame_v2(header: bytes | TokenHeader, payload: bytes, version: int = 2) -> bytes:
    """An independent writer of version 2's layout: header raw bytes, or a TokenHeader."""
    if isinstance(header, TokenHeader):
        header = v2_header(dataclasses.asdict(header))
    body = MAGIC + bytes([version]) + header + payload
    return body + struct.pack("<I", zlib.crc32(body))


def payload_of(data: bytes) -> bytes:
    """The payload of a version 2 file, found by skipping the documented header."""
    at = 5
    for i in range(len(V2_INTS) + len(V2_STRINGS)):
        value, shift = 0, 0
        while True:
            byte = data[at]
            at += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if i >= len(V2_INTS):
            at += value  # a string's bytes
    return data[at:-4]


def header_json(header: TokenHeader, **changes: object) -> bytes:
    """Version 1's header as its writer made it: compact, key-sorted JSON (fields may be forged)."""
    fields = dataclasses.asdict(header) | changes
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("K", [2, 1000, 1024, 4096])
@pytest.mark.parametrize("entropy_coded", [False, True])
def test_file_round_trip_is_bit_exact(tmp_path, rng, channels, K, entropy_coded):
    counts = skewed_counts(rng, 8, K)  # model has 8 codebooks; files use the first n_q
    lookup = {entropy_model_id(counts): probabilities_from_counts(counts)}
    for n_q in range(1, 9):
        frames = int(rng.integers(1, 40))
        codes = rng.integers(0, K, size=(channels, n_q, frames))
        model_id = entropy_model_id(counts) if entropy_coded else ""
        header = make_header(channels, n_q, K, frames, model_id)
        probs = lookup[model_id] if entropy_coded else None
        path = tmp_path / f"{n_q}.rvqt"
        write_token_file(path, header, codes, stats_probs=probs)
        got_header, got = read_token_file(path, probs_lookup=lookup)
        assert got_header == header
        assert got.dtype == np.int64 and got.shape == (channels, n_q, frames)
        np.testing.assert_array_equal(got, codes)


@pytest.mark.parametrize("entropy_coded", [False, True])
def test_round_trip_with_no_frames(rng, entropy_coded):
    counts = skewed_counts(rng, 2, 16)
    model_id = entropy_model_id(counts) if entropy_coded else ""
    probs = probabilities_from_counts(counts) if entropy_coded else None
    header = make_header(2, 2, 16, 0, model_id)
    data = encode_token_bytes(header, np.zeros((2, 2, 0), dtype=np.int64), probs)
    got_header, got = decode_token_bytes(data, {model_id: probs})
    assert got_header == header and got.shape == (2, 2, 0)


def test_lookup_may_be_a_function(rng):
    counts = skewed_counts(rng, 3, 100)
    probs = probabilities_from_counts(counts)
    codes = rng.integers(0, 100, size=(1, 3, 20))
    header = make_header(1, 3, 100, 20, entropy_model_id(counts))
    data = encode_token_bytes(header, codes, probs)
    _, got = decode_token_bytes(data, lambda name: probs if name == header.entropy_model else None)
    np.testing.assert_array_equal(got, codes)


def test_written_bytes_follow_the_documented_layout(rng):
    header = make_header(1, 2, 1000, 7)
    codes = rng.integers(0, 1000, size=(1, 2, 7))
    expected = frame_v2(header, pack_codes(codes, 1000))
    assert encode_token_bytes(header, codes) == expected
    assert expected[:5] == b"RVQT\x02"
    assert tokenfile.token_payload(expected) == payload_of(expected) == pack_codes(codes, 1000)


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**32, 2**63 - 1, 2**64 - 1])
def test_varint_matches_slow_reference_and_reads_back(value):
    raw = tokenfile._varint(value)
    assert raw == slow_varint(value)
    assert tokenfile._read_varint(raw + b"tail", 0, len(raw) + 4, "x") == (value, len(raw))


def test_header_overhead_is_small():
    """A speech16k-like header: 66 bytes of overhead, where version 1's JSON took 247."""
    header = TokenHeader("speech16k", "cdc79f4792cc0aac", 16000, 16000, 1, 62540, 12, 1024, 196,
                         "2f171f47d0bb1496")
    codes = np.zeros(header.codes_shape, dtype=np.int64)
    packed = pack_codes(codes, 1024)
    header.entropy_model = ""
    v2 = encode_token_bytes(header, codes)
    assert len(v2) - len(packed) == 50
    header.entropy_model = "2f171f47d0bb1496"
    # 5 (magic, version) + 13 (seven varints) + 1+9, 1+16, 1+16 (three strings) + 4 (CRC32)
    assert len(frame_v2(header, packed)) - len(packed) == 66
    assert len(frame_v1(header_json(header), packed)) - len(packed) == 247


@pytest.mark.parametrize("entropy_coded", [False, True])
def test_version_1_files_are_still_read(rng, entropy_coded):
    counts = skewed_counts(rng, 3, 50)
    model_id = entropy_model_id(counts) if entropy_coded else ""
    probs = probabilities_from_counts(counts)
    header = make_header(2, 3, 50, 9, model_id)
    codes = rng.integers(0, 50, size=(2, 3, 9))
    v2 = encode_token_bytes(header, codes, probs if entropy_coded else None)
    v1 = frame_v1(header_json(header), payload_of(v2))
    got_header, got = decode_token_bytes(v1, {model_id: probs})
    assert got_header == header
    np.testing.assert_array_equal(got, codes)
    assert tokenfile.decode_token_header(v1) == header


# ---------------------------------------------------------------- bit-packing


def slow_pack(codes: np.ndarray, K: int) -> bytes:
    """Reference: codes as MSB-first bit strings, concatenated, zero-padded to a byte."""
    bits = "".join(format(int(c), f"0{bits_per_code(K)}b") for c in codes.ravel())
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))


@pytest.mark.parametrize("K", [2, 3, 1000, 1024, 4096, 2**20])
def test_pack_matches_slow_reference_and_unpacks(rng, K):
    codes = rng.integers(0, K, size=(2, 3, 11))
    packed = pack_codes(codes, K)
    assert packed == slow_pack(codes, K)
    assert len(packed) == -(-codes.size * bits_per_code(K) // 8)
    np.testing.assert_array_equal(unpack_codes(packed, codes.shape, K), codes)


def test_bits_per_code():
    sizes = (2, 3, 4, 1000, 1024, 1025, 4096)
    assert [bits_per_code(k) for k in sizes] == [1, 2, 2, 10, 10, 11, 12]


def test_unpack_rejects_codes_beyond_codebook():
    data = slow_pack(np.array([1023, 0]), 1024)  # 10-bit codes, 1023 >= K = 1000
    with pytest.raises(PayloadError, match=r"must lie in \[0, 1000\)"):
        unpack_codes(data, (2,), 1000)


def test_unpack_rejects_padding_bits():
    with pytest.raises(PayloadError, match="padding"):
        unpack_codes(b"\x81", (1,), 4)  # code 0b10, then padding 000001


# ---------------------------------------------------------------- statistics and entropy coding


def test_probabilities_are_laplace_smoothed_and_positive():
    counts = np.array([[0, 0, 0, 0], [5, 0, 3, 0], [10**12, 0, 0, 0]])
    probs = probabilities_from_counts(counts)
    assert probs.dtype == np.float64 and np.all(probs > 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_allclose(probs[1], [6 / 12, 1 / 12, 4 / 12, 1 / 12])
    np.testing.assert_allclose(probs[0], 0.25)


def test_count_symbols_matches_loop(rng):
    codes = rng.integers(0, 7, size=(2, 3, 50))
    expected = np.zeros((3, 7), dtype=np.int64)
    for c, q, f in np.ndindex(codes.shape):
        expected[q, codes[c, q, f]] += 1
    np.testing.assert_array_equal(count_symbols(codes, 7), expected)


def test_entropy_model_id_names_the_counts():
    counts = np.arange(12).reshape(3, 4)
    model_id = entropy_model_id(counts)
    assert len(model_id) == 16 and int(model_id, 16) >= 0
    assert model_id == entropy_model_id(counts.astype(np.int32))
    assert model_id != entropy_model_id(counts + np.eye(3, 4, dtype=np.int64))
    assert model_id != entropy_model_id(counts.reshape(2, 6))  # same bytes, other shape


def test_entropy_coding_beats_bit_packing_on_zipf_codes(rng):
    K, n_q, frames = 1024, 4, 20_000
    codes = (rng.zipf(1.3, size=(1, n_q, frames)) - 1) % K  # (1, n_q, F)
    counts = count_symbols(codes, K)
    probs = probabilities_from_counts(counts)
    header = make_header(1, n_q, K, frames, entropy_model_id(counts))
    coded = encode_token_bytes(header, codes, probs)
    packed = encode_token_bytes(dataclasses.replace(header, entropy_model=""), codes)
    assert len(coded) < 0.7 * len(packed)
    # the range coder spends what the model says, give or take quantisation and a final word
    cross_entropy_bits = -np.log2(np.take_along_axis(probs, codes[0], axis=1)).sum()
    assert 8 * len(payload_of(coded)) <= 1.01 * cross_entropy_bits + 64


def test_extremely_skewed_stats_stay_within_the_reader_bound():
    counts = np.array([[10**15, 0]])  # p(0) ~ 1: capped at 0.98 by the coder
    frames = 200_000
    header = make_header(1, 1, 2, frames, entropy_model_id(counts))
    probs = probabilities_from_counts(counts)
    data = encode_token_bytes(header, np.zeros((1, 1, frames), dtype=np.int64), probs)
    assert frames <= max_coded_symbols(len(payload_of(data)))
    _, codes = decode_token_bytes(data, {header.entropy_model: probs})
    assert not codes.any()


# ---------------------------------------------------------------- reader errors


@pytest.fixture
def packed_file(rng) -> bytes:
    return encode_token_bytes(make_header(1, 2, 1000, 5), rng.integers(0, 1000, size=(1, 2, 5)))


@pytest.fixture
def packed_file_v1(rng) -> bytes:
    header = make_header(1, 2, 1000, 5)
    return frame_v1(header_json(header), pack_codes(rng.integers(0, 1000, size=(1, 2, 5)), 1000))


@pytest.fixture
def coded_file(rng) -> tuple[bytes, dict[str, np.ndarray]]:
    counts = skewed_counts(rng, 2, 16)
    header = make_header(2, 2, 16, 6, entropy_model_id(counts))
    probs = probabilities_from_counts(counts)
    data = encode_token_bytes(header, rng.integers(0, 16, size=(2, 2, 6)), probs)
    return data, {header.entropy_model: probs}


def test_wrong_magic(packed_file):
    with pytest.raises(TokenFileError, match="bad magic"):
        decode_token_bytes(b"RIFF" + packed_file[4:])


def test_future_version(packed_file):
    data = packed_file[:4] + b"\x03" + packed_file[5:]
    with pytest.raises(TokenFileError, match="version 3 is newer"):
        decode_token_bytes(data)


def test_version_zero(packed_file):
    with pytest.raises(TokenFileError, match="unsupported token file format version 0"):
        decode_token_bytes(packed_file[:4] + b"\x00" + packed_file[5:])


def test_v1_header_claiming_more_than_the_file(packed_file_v1):
    data = packed_file_v1[:5] + struct.pack("<I", 60_000) + packed_file_v1[9:]
    with pytest.raises(TokenFileError, match="header claims 60000 bytes but the file ends"):
        decode_token_bytes(data)


def test_v1_header_longer_than_limit(packed_file_v1):
    data = packed_file_v1[:5] + struct.pack("<I", 2**32 - 1) + packed_file_v1[9:]
    with pytest.raises(TokenFileError, match="exceeds the limit"):
        decode_token_bytes(data)


def test_v1_payload_claiming_more_than_the_file(rng):
    header = make_header(1, 2, 1000, 5)
    data = frame_v1(header_json(header), b"")
    at = 9 + len(header_json(header))
    data = data[:at] + struct.pack("<Q", 2**63) + data[at + 8 :]
    with pytest.raises(TokenFileError, match="payload claims 9223372036854775808 bytes"):
        decode_token_bytes(data)


def test_v1_trailing_garbage(packed_file_v1):
    with pytest.raises(TokenFileError, match="3 bytes of trailing garbage"):
        decode_token_bytes(packed_file_v1 + b"abc")


def test_trailing_garbage_breaks_the_checksum(packed_file):
    """Version 2 has no payload length: the checksum is the last 4 bytes, so garbage moves it."""
    with pytest.raises(TokenFileError, match="checksum mismatch"):
        decode_token_bytes(packed_file + b"abc")


def test_too_short_for_a_checksum():
    with pytest.raises(TokenFileError, match="too short to hold the checksum"):
        decode_token_bytes(MAGIC + b"\x02abc")


V2_BASE = dataclasses.asdict(make_header(1, 2, 1000, 5))
V2_BASE_INTS = len(b"".join(slow_varint(V2_BASE[name]) for name in V2_INTS))  # where model_name starts


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (v2_header(V2_BASE | {"n_q": 0}), r"'n_q' = 0 is outside"),
        (v2_header(V2_BASE | {"codebook_size": 1}), r"'codebook_size' = 1 is outside"),
        (v2_header(V2_BASE | {"num_samples": 2**64}), r"'num_samples' = 18446744073709551616 is outside"),
        (v2_header(V2_BASE | {"channels": 64, "n_q": 256, "num_frames": 2**30}), "more than 2147483648"),
        (v2_header(V2_BASE | {"sample_rate": 9_999_991}), r"'sample_rate' = 9999991 is outside \[1, 768000\]"),
        (v2_header(V2_BASE | {"model_sample_rate": 768_001}), r"'model_sample_rate' = 768001 is outside"),
        (v2_header(V2_BASE | {"channels": 65}), r"'channels' = 65 is outside \[1, 64\]"),
        (v2_header(V2_BASE | {"num_samples": 2**40 + 1}), r"'num_samples' = 1099511627777 is outside"),
        (v2_header(V2_BASE)[:3], "header ends inside header field 'sample_rate'"),
        (v2_header(V2_BASE)[:-1], "header ends inside the length of header field 'entropy_model'"),
        (v2_header(V2_BASE)[:-2], r"'model_fingerprint' claims 8 bytes but only 7 remain"),
        (b"\x80\x00" + v2_header(V2_BASE)[len(slow_varint(16000)):], "'model_sample_rate' is not a canonical varint"),
        (v2_header(V2_BASE)[:V2_BASE_INTS] + slow_varint(5000) + b"x" * 5000, "'model_name' claims 5000 bytes, more than 4096"),
        (b"\xff" * 11, "'model_sample_rate' is a varint longer than 10 bytes"),
        (v2_header(V2_BASE)[:V2_BASE_INTS] + b"\x7f" + b"x" * 9, r"'model_name' claims 127 bytes but only 9 remain"),
        (v2_header(V2_BASE)[:V2_BASE_INTS] + b"\x02\xff\xfe" + b"\x00\x00", "'model_name' is not valid UTF-8"),
    ],
)
def test_v2_header_is_validated(header, message):
    with pytest.raises(TokenFileError, match=message):
        decode_token_bytes(frame_v2(header, b""))


def test_bad_checksum(packed_file):
    data = packed_file[:-1] + bytes([packed_file[-1] ^ 0xFF])
    with pytest.raises(TokenFileError, match="checksum mismatch"):
        decode_token_bytes(data)


def test_missing_stats_names_the_entropy_model(coded_file):
    data, lookup = coded_file
    (model_id,) = lookup
    with pytest.raises(TokenFileError, match=f"entropy model '{model_id}'.*not supplied"):
        decode_token_bytes(data)
    other = {FAKE_ID: next(iter(lookup.values()))}
    with pytest.raises(TokenFileError, match=f"entropy model '{model_id}'.*not supplied"):
        decode_token_bytes(data, other)


def test_stats_of_wrong_shape(coded_file):
    data, lookup = coded_file
    (model_id,) = lookup
    message = r"has shape \(2, 8\); the file needs at least \(2, 16\)"
    with pytest.raises(TokenFileError, match=message):
        decode_token_bytes(data, {model_id: np.full((2, 8), 1 / 8)})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_q": -1}, r"'n_q' = -1 is outside"),
        ({"channels": True}, "'channels' must be int"),
        ({"num_frames": 5.0}, "'num_frames' must be int"),
        ({"model_name": 3}, "'model_name' must be str"),
        ({"codebook_size": 1}, "'codebook_size' = 1 is outside"),
        ({"channels": 64, "n_q": 256, "num_frames": 2**30}, "more than 2147483648"),
    ],
)
def test_header_fields_are_validated(changes, message):
    data = frame_v1(header_json(make_header(), **changes), b"")
    with pytest.raises(TokenFileError, match=message):
        decode_token_bytes(data)


def test_header_missing_field():
    fields = dataclasses.asdict(make_header())
    del fields["num_samples"]
    with pytest.raises(TokenFileError, match="missing fields: num_samples"):
        decode_token_bytes(frame_v1(json.dumps(fields).encode(), b""))


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b"[1, 2]", b"[" * 60_000])
def test_header_not_a_json_object(raw):
    with pytest.raises(TokenFileError, match="header"):
        decode_token_bytes(frame_v1(raw, b""))


def test_bit_packed_payload_of_wrong_size():
    data = frame_v1(header_json(make_header(1, 2, 1000, 5)), bytes(12))  # needs 13
    with pytest.raises(TokenFileError, match="bit-packed payload is 12 bytes.*need exactly 13"):
        decode_token_bytes(data)


def test_entropy_coded_header_claiming_too_many_codes():
    header = make_header(1, 8, 1024, 2**20, FAKE_ID)
    data = frame_v1(header_json(header), bytes(8))
    with pytest.raises(TokenFileError, match="holds at most 8192"):
        decode_token_bytes(data, {FAKE_ID: np.full((8, 1024), 1 / 1024)})


@pytest.mark.parametrize("extra", [b"\x00" * 4, b"\x01\x02\x03\x04", b"\xff" * 8])
def test_entropy_coded_payload_with_extra_words_is_rejected(coded_file, extra):
    data, lookup = coded_file
    payload = payload_of(data)
    header = tokenfile.decode_token_header(data)
    forged = frame_v2(header, payload + extra)
    with pytest.raises(TokenFileError, match="data left after the last code"):
        decode_token_bytes(forged, lookup)


def test_entropy_coded_garbage_payload(rng):
    header = make_header(1, 1, 16, 4, FAKE_ID)
    payload = rng.integers(0, 256, size=64, dtype=np.uint8).tobytes()
    with pytest.raises(TokenFileError, match="entropy-coded payload"):
        decode_token_bytes(frame_v1(header_json(header), payload), {FAKE_ID: np.full((1, 16), 0.1)})


# ---------------------------------------------------------------- fuzzing


def small_files() -> list[bytes]:
    rng = np.random.default_rng(7)
    counts = skewed_counts(rng, 2, 5)
    coded = make_header(2, 2, 5, 3, entropy_model_id(counts))
    return [
        encode_token_bytes(make_header(1, 1, 3, 3), rng.integers(0, 3, size=(1, 1, 3))),
        encode_token_bytes(
            coded, rng.integers(0, 5, size=(2, 2, 3)), probabilities_from_counts(counts)
        ),
        frame_v1(header_json(make_header(1, 1, 3, 3)), pack_codes(np.zeros((1, 1, 3), dtype=np.int64), 3)),
    ]


@pytest.mark.parametrize("data", small_files(), ids=["packed", "coded", "version-1"])
def test_every_truncation_is_rejected(data):
    for end in range(len(data)):
        with pytest.raises(TokenFileError):
            decode_token_bytes(data[:end])


@pytest.mark.parametrize("data", small_files(), ids=["packed", "coded", "version-1"])
def test_every_single_bit_flip_is_rejected(data):
    flipped = bytearray(data)
    for bit in range(8 * len(data)):
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(TokenFileError):
            decode_token_bytes(bytes(flipped))
        flipped[bit // 8] ^= 1 << (bit % 8)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_token_file_error(data):
    with pytest.raises(TokenFileError):
        decode_token_bytes(data)


@FUZZ
@given(st.sampled_from([b"\x01", b"\x02"]), st.binary(max_size=300))
def test_random_bytes_after_magic_raise_only_token_file_error(version, data):
    with pytest.raises(TokenFileError):
        decode_token_bytes(MAGIC + version + data)


@FUZZ
@given(st.binary(max_size=120), st.binary(max_size=40))
def test_random_v2_headers_with_a_valid_checksum_raise_only_token_file_error(header, payload):
    lookup = {FAKE_ID: np.full((8, 1024), 1 / 1024)}
    try:
        got, codes = decode_token_bytes(frame_v2(header, payload), lookup)
    except TokenFileError:
        return
    assert codes.shape == got.codes_shape


@FUZZ
@given(
    ints=st.dictionaries(st.sampled_from(V2_INTS), st.integers(0, 2**70), max_size=3),
    strings=st.dictionaries(st.sampled_from(V2_STRINGS), st.sampled_from(["", FAKE_ID, "x", "é"]), max_size=2),
    cut=st.integers(0, 8),
    payload=st.binary(max_size=64),
)
def test_forged_v2_headers_decode_or_raise_token_file_error(ints, strings, cut, payload):
    """With a valid checksum, any version 2 header and payload decode consistently or are rejected."""
    lookup = {FAKE_ID: np.full((8, 1024), 1 / 1024)}
    raw = v2_header(dataclasses.asdict(make_header(2, 2, 1024, 3, FAKE_ID)) | ints | strings)
    try:
        header, codes = decode_token_bytes(frame_v2(raw[: len(raw) - cut], payload), lookup)
    except TokenFileError:
        return
    assert codes.shape == header.codes_shape
    assert codes.size == 0 or (codes.min() >= 0 and codes.max() < header.codebook_size)


json_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=2),
)


@FUZZ
@given(
    changes=st.dictionaries(
        st.sampled_from([f.name for f in dataclasses.fields(TokenHeader)]), json_values, max_size=3
    ),
    payload=st.binary(max_size=64),
)
def test_forged_headers_and_payloads_decode_or_raise_token_file_error(changes, payload):
    """With a valid checksum, any header and payload either decode consistently or are rejected."""
    lookup = {FAKE_ID: np.full((8, 1024), 1 / 1024)}
    base = make_header(2, 2, 1024, 3, FAKE_ID)
    try:
        data = frame_v1(header_json(base, **changes), payload)
        header, codes = decode_token_bytes(data, lookup)
    except TokenFileError:
        return
    assert codes.shape == header.codes_shape
    assert codes.size == 0 or (codes.min() >= 0 and codes.max() < header.codebook_size)


# ---------------------------------------------------------------- writer


@pytest.mark.parametrize(("name", "message"), [
    ("\udcff", "'model_name' cannot be stored as UTF-8"),     # a non-UTF-8 path from argv
    ("x" * 4097, "'model_name' is 4097 bytes of UTF-8, more than 4096"),
])
def test_writer_rejects_names_a_reader_would_refuse(name, message):
    header = dataclasses.replace(make_header(1, 1, 16, 1), model_name=name)
    with pytest.raises(TokenFileError, match=message):
        encode_token_bytes(header, np.zeros((1, 1, 1), dtype=np.int64))


def test_writer_rejects_inconsistent_arguments(rng):
    header = make_header(1, 2, 16, 4)
    with pytest.raises(ValueError, match="header says"):
        encode_token_bytes(header, np.zeros((1, 3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match=r"must lie in \[0, 16\)"):
        encode_token_bytes(header, np.full((1, 2, 4), 16))
    with pytest.raises(ValueError, match="entropy_model must be set exactly when"):
        encode_token_bytes(header, np.zeros((1, 2, 4), dtype=np.int64), np.full((2, 16), 1 / 16))


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, rng, failing):
    def boom(*args: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(tokenfile.os, failing, boom)
    with pytest.raises(OSError, match="disk on fire"):
        codes = rng.integers(0, 1024, size=(1, 2, 5))
        write_token_file(tmp_path / "out.rvqt", make_header(), codes)
    assert os.listdir(tmp_path) == []


def test_failed_overwrite_keeps_the_old_file(tmp_path, monkeypatch, rng):
    path = tmp_path / "out.rvqt"
    codes = rng.integers(0, 1024, size=(1, 2, 5))
    write_token_file(path, make_header(), codes)
    old = path.read_bytes()
    def refuse(*args: object) -> None:
        raise OSError("nope")

    monkeypatch.setattr(tokenfile.os, "replace", refuse)
    with pytest.raises(OSError):
        write_token_file(path, make_header(), codes + 1)
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["out.rvqt"]


# ---------------------------------------------------------------- memory bounded by the input


def flat_model(n_q: int = 8, K: int = 1024) -> tuple[str, np.ndarray]:
    counts = np.full((n_q, K), 100, dtype=np.int64)
    return entropy_model_id(counts), probabilities_from_counts(counts)


def test_model_bound_is_tight_and_holds_for_real_payloads(rng):
    """max_coded_symbols with the model: within 1.3x of what a flat model can really code, and
    never below what a payload of random codes holds."""
    model_id, probs = flat_model(n_q=4)
    for frames in (1, 50, 3000):
        codes = rng.integers(0, 1024, size=(2, 4, frames))
        data = encode_token_bytes(make_header(2, 4, 1024, frames, model_id), codes, probs)
        payload_bytes = len(payload_of(data))
        assert codes.size <= max_coded_symbols(payload_bytes, probs, 4)
        assert max_coded_symbols(payload_bytes, probs, 4) <= 1.3 * payload_bytes * 8 / 10 + 64
        _, decoded = decode_token_bytes(data, {model_id: probs})
        np.testing.assert_array_equal(decoded, codes)
    assert max_coded_symbols(1000, probs, 4) < max_coded_symbols(1000) / 50   # the format's loose bound


@pytest.mark.parametrize("payload_bytes", [4 << 20, 256 << 10])
def test_a_zero_payload_claiming_huge_counts_fails_in_bounded_memory(tmp_path, payload_bytes):
    """Issue 31 row 1: a checksummed file whose header claims as many codes as the format's loose
    bound allows. The reader must refuse it with 256 MiB of address space to spare (it used to
    allocate 8 bytes per claimed code: 16 GiB for the 4 MiB file)."""
    model_id, probs = flat_model()
    n_q = 8
    frames = min(tokenfile.MAX_CODES, max_coded_symbols(payload_bytes)) // n_q
    header = make_header(1, n_q, 1024, frames, model_id)
    path = tmp_path / "hostile.rvqt"
    path.write_bytes(frame_v2(header, bytes(payload_bytes)))
    np.save(tmp_path / "probs.npy", probs)
    result = run_with_memory_headroom(
        "import numpy as np\nfrom codec.tokenfile import read_token_file, TokenFileError",
        f"probs = np.load({str(tmp_path / 'probs.npy')!r})\n"
        "try:\n"
        f"    read_token_file({str(path)!r}, {{{model_id!r}: probs}})\n"
        "except TokenFileError as err:\n"
        "    print('TokenFileError:', err)\n",
        headroom=256 << 20)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("TokenFileError: header claims"), result.stdout


def test_decoding_stops_at_the_end_of_a_short_payload():
    """A payload too short for its header's codes is refused as soon as the decoder runs past
    its last word, not after decoding every claimed code. The model makes its last symbol 98%
    likely, so the bound allows ~275 codes a byte, while zero words decode to symbol 0, which
    costs ~17 bits: the decoder runs out of words after a fiftieth of the claimed codes."""
    counts = np.ones((1, 1024), dtype=np.int64)
    counts[0, -1] = 10**9
    model_id, probs = entropy_model_id(counts), probabilities_from_counts(counts)
    payload = bytes(4000)
    frames = max_coded_symbols(len(payload), probs, 1)
    with pytest.raises(TokenFileError, match="ends before its"):
        decode_token_bytes(frame_v2(make_header(1, 1, 1024, frames, model_id), payload), {model_id: probs})


@pytest.mark.parametrize("changes", [{"sample_rate": 10**7}, {"channels": 256}, {"num_samples": 2**41}])
def test_the_writer_refuses_what_the_reader_refuses(changes, rng):
    header = dataclasses.replace(make_header(1, 2, 1000, 5), **changes)
    codes = rng.integers(0, 1000, size=header.codes_shape)
    with pytest.raises(TokenFileError, match="is outside"):
        encode_token_bytes(header, codes)


def test_token_and_audio_rate_limits_agree():
    from codec.audio import MAX_SAMPLE_RATE
    assert tokenfile.MAX_SAMPLE_RATE == MAX_SAMPLE_RATE


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 10**6),
                          st.integers(0, 255)), min_size=1, max_size=4))
def test_structural_mutants_with_a_recomputed_checksum_decode_exactly_or_raise(edits):
    """Mutants of a real entropy-coded file (bytes flipped, cut, inserted or deleted anywhere
    past the magic, then the checksum recomputed so the parser goes deep): each is refused
    with a TokenFileError, or is a valid file whose codes re-encode to exactly its bytes."""
    rng = np.random.default_rng(7)
    counts = skewed_counts(rng, 3, 64)
    model_id, probs = entropy_model_id(counts), probabilities_from_counts(counts)
    codes = rng.integers(0, 64, size=(2, 3, 40))
    body = bytearray(encode_token_bytes(make_header(2, 3, 64, 40, model_id), codes, probs)[:-4])
    for op, where, value in edits:
        at = len(MAGIC) + 1 + where % max(1, len(body) - len(MAGIC) - 1)
        if op == "flip":
            body[min(at, len(body) - 1)] ^= value or 1
        elif op == "cut":
            del body[at:]
        elif op == "insert":
            body.insert(at, value)
        elif len(body) > len(MAGIC) + 1:
            del body[min(at, len(body) - 1)]
    data = bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))
    try:
        header, got = decode_token_bytes(data, {model_id: probs})
    except TokenFileError:
        return
    assert encode_token_bytes(header, got, probs if header.entropy_model else None) == data
