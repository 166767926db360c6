"""The command line and its Python twins (codec/cli.py, codec/api.py) on real recorded speech.

A tiny model, k-means-initialised on the bundled clips and with symbol statistics gathered by
encoding two of them (as training does), is saved to a temporary folder and passed by path.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import codec
from codec.api import decode_file, encode_file, read_header, read_tokens, write_tokens
from codec.audio import load_audio, resample, resampled_length, save_audio
from codec.cli import main
from codec.entropy import count_symbols
from codec.tokenfile import token_payload
from tests.helpers import tiny_model

REPO = Path(__file__).resolve().parents[1]
PCM16_STEP = 1.0 / 32768


# ---------------------------------------------------------------- fixtures
def trained_tiny_model(clips: list[Path], count_on: list[Path], seed: int) -> codec.Codec:
    """tests.helpers.tiny_model (3 codebooks of 16) after one training step on the clips, with
    symbol_counts from encoding ``count_on`` (empty: none, so token files are bit-packed)."""
    torch.manual_seed(seed)
    model = tiny_model(quantizer_dropout=False)
    wavs = [load_audio(path)[0] for path in clips]
    shortest = min(w.shape[1] for w in wavs)
    model.train()(torch.stack([w[:, :shortest] for w in wavs]))         # k-means on real latents
    model.eval()
    for path in count_on:
        codes = model.encode(load_audio(path)[0][None])
        model.symbol_counts += torch.from_numpy(count_symbols(codes.numpy(), model.codebook_size))
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory, speech_clips) -> dict[str, Path]:
    """Model folders: "tiny" (entropy-coded tokens), "plain" (same weights, bit-packed), "other"."""
    root = tmp_path_factory.mktemp("models")
    en, es, fr = speech_clips
    tiny = trained_tiny_model(speech_clips, [es, fr], seed=0)               # counts exclude `en`
    plain = trained_tiny_model(speech_clips, [], seed=0)
    other = trained_tiny_model(speech_clips, [es, fr], seed=1)
    return {name: m.save(root / name) for name, m in [("tiny", tiny), ("plain", plain), ("other", other)]}


@pytest.fixture(scope="module")
def stereo_44k(tmp_path_factory, speech_clips) -> Path:
    """Two different clips (English left, Spanish right) at 44.1 kHz, stereo PCM16 WAV."""
    en, es = (load_audio(path)[0] for path in speech_clips[:2])
    n = min(en.shape[1], es.shape[1])
    wav = resample(torch.cat([en[:, :n], es[:, :n]]), 16000, 44100)          # (2, T)
    path = tmp_path_factory.mktemp("audio") / "stereo_44k.wav"
    save_audio(path, wav, 44100)
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def assert_fails(capsys, folder: Path, argv: list, fragment: str, code: int = 1) -> str:
    """One 'codec: error:' line containing fragment, the exit code, and no new file in folder."""
    before = files(folder)
    exit_code, out, err = cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert exit_code == code, err
    assert len(lines) == 1 and lines[0].startswith("codec: error: "), err
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in err and out == ""
    assert files(folder) == before
    return lines[0]


# ---------------------------------------------------------------- round trips
def test_mono_16k_round_trip(tmp_path, capsys, models, speech_wav):
    tokens, out = tmp_path / "speech.rvqt", tmp_path / "speech.wav"
    assert cli(capsys, "encode", speech_wav, tokens, "--model", models["tiny"])[0] == 0
    assert cli(capsys, "decode", tokens, out)[0] == 0                      # model named in the file
    wav, sr = load_audio(speech_wav)
    back, back_sr = load_audio(out)
    assert back_sr == sr == 16000 and back.shape == wav.shape
    model = codec.load(models["tiny"])
    codes = read_tokens(tokens).codes                                       # (1, 3, F)
    assert torch.equal(codes, model.encode(wav[None]))                     # one chunk: the very same codes
    expected = model.decode(codes)[:, 0].clamp(-1, 1)
    assert (back - expected).abs().max() <= PCM16_STEP
    assert files(tmp_path) == {"speech.rvqt", "speech.wav"}


def test_stereo_44k_comes_back_stereo_44k_in_order(tmp_path, capsys, models, stereo_44k):
    tokens, out = tmp_path / "stereo.rvqt", tmp_path / "stereo.flac"
    assert cli(capsys, "encode", stereo_44k, tokens, "--model", models["tiny"])[0] == 0
    header = read_header(tokens)
    assert (header.channels, header.sample_rate, header.model_sample_rate) == (2, 44100, 16000)
    assert cli(capsys, "decode", tokens, out)[0] == 0
    wav, _ = load_audio(stereo_44k)
    back, sr = load_audio(out)
    assert sr == 44100 and back.shape == wav.shape == (2, wav.shape[1])

    # channel order: the left channel alone, encoded as a mono file, gives channel 0's codes
    left = tmp_path / "left.wav"
    save_audio(left, wav[:1], 44100)
    encode_file(left, tmp_path / "left.rvqt", model=models["tiny"])
    codes, left_codes = read_tokens(tokens).codes, read_tokens(tmp_path / "left.rvqt").codes
    assert (codes[0] == left_codes[0]).float().mean() > 0.99              # equal up to argmin ties
    assert (codes[1] == left_codes[0]).float().mean() < 0.5                # the right channel differs

    # the decoded file is the model's output resampled back, channel by channel
    model = codec.load(models["tiny"])
    expected = resample(model.decode(codes)[:, 0], 16000, 44100)[:, :wav.shape[1]].clamp(-1, 1)
    assert (back - expected).abs().max() <= PCM16_STEP + 1e-5


def test_model_rate_keeps_the_models_rate(tmp_path, capsys, models, stereo_44k):
    tokens, out = tmp_path / "s.rvqt", tmp_path / "s.wav"
    encode_file(stereo_44k, tokens, model=models["tiny"])
    assert cli(capsys, "decode", tokens, out, "--model-rate", "--model", models["tiny"])[0] == 0
    info = sf.info(str(out))
    frames = sf.info(str(stereo_44k)).frames
    assert (info.samplerate, info.channels, info.frames) == (16000, 2, resampled_length(frames, 44100, 16000))


def test_flac_input_gives_the_same_codes_as_wav(tmp_path, capsys, models, speech_wav):
    wav, sr = load_audio(speech_wav)
    save_audio(tmp_path / "speech.flac", wav, sr)                          # PCM16 in, PCM16 out: lossless
    assert cli(capsys, "encode", tmp_path / "speech.flac", tmp_path / "a.rvqt", "--model", models["tiny"])[0] == 0
    encode_file(speech_wav, tmp_path / "b.rvqt", model=models["tiny"])
    assert torch.equal(read_tokens(tmp_path / "a.rvqt").codes, read_tokens(tmp_path / "b.rvqt").codes)
    assert cli(capsys, "decode", tmp_path / "a.rvqt", tmp_path / "a.flac")[0] == 0
    assert sf.info(str(tmp_path / "a.flac")).format == "FLAC"


def test_chunked_file_coding_keeps_the_exact_length(tmp_path, models, speech_clips):
    """Three clips end to end (13.5 s) with 50-frame chunks: same length, every channel."""
    wav = torch.cat([load_audio(path)[0] for path in speech_clips], dim=1)
    save_audio(tmp_path / "long.wav", wav, 16000)
    header = encode_file(tmp_path / "long.wav", tmp_path / "long.rvqt", model=models["tiny"], chunk_frames=50)
    assert header.num_frames == -(-wav.shape[1] // 320)
    info = decode_file(tmp_path / "long.rvqt", tmp_path / "back.wav", chunk_frames=50)
    assert (info.sample_rate, info.frames, info.channels) == (16000, wav.shape[1], 1)
    assert sf.info(str(tmp_path / "back.wav")).frames == wav.shape[1]


def test_write_and_read_tokens_twins(tmp_path, models, speech_wav):
    model = codec.load(models["tiny"])
    wav, _ = load_audio(speech_wav)
    codes = model.encode(wav[None], n_q=2)                                  # (1, 2, F), num_samples set
    header = write_tokens(tmp_path / "t.rvqt", codes, models["tiny"])
    assert (header.n_q, header.num_samples, header.entropy_model != "") == (2, wav.shape[1], True)
    tokens = read_tokens(tmp_path / "t.rvqt", model)
    assert tokens.header == header and torch.equal(tokens.codes, codes)
    assert model.decode(tokens.codes).shape == (1, 1, wav.shape[1])
    with pytest.raises(FileExistsError):
        write_tokens(tmp_path / "t.rvqt", codes, model)
    with pytest.raises(ValueError, match=r"10 samples at 16000 Hz make 1 frames, but the codes have"):
        write_tokens(tmp_path / "u.rvqt", codes, model, num_samples=10)   # a file its reader would refuse
    copy = write_tokens(tmp_path / "c.rvqt", codes.clone(), model, sample_rate=44100,
                        num_samples=resampled_length(wav.shape[1], 16000, 44100))
    assert read_tokens(tmp_path / "c.rvqt", model).header == copy


# ---------------------------------------------------------------- bitrates and entropy coding
def payload_bytes(path: Path) -> int:
    """Length of a token file's payload (its checked header and framing left out)."""
    return len(token_payload(path.read_bytes()))


def test_entropy_coding_beats_bit_packing_on_speech(tmp_path, models, speech_wav):
    """Statistics gathered on the Spanish and French clips compress the English one."""
    coded = encode_file(speech_wav, tmp_path / "coded.rvqt", model=models["tiny"])
    packed = encode_file(speech_wav, tmp_path / "packed.rvqt", model=models["plain"])
    assert coded.entropy_model and not packed.entropy_model
    assert torch.equal(read_tokens(tmp_path / "coded.rvqt").codes, read_tokens(tmp_path / "packed.rvqt").codes)
    assert payload_bytes(tmp_path / "packed.rvqt") == -(-packed.num_codes * 4 // 8)   # 4 bits per code
    assert payload_bytes(tmp_path / "coded.rvqt") < 0.95 * payload_bytes(tmp_path / "packed.rvqt")
    assert (tmp_path / "coded.rvqt").stat().st_size < (tmp_path / "packed.rvqt").stat().st_size


@pytest.mark.parametrize("kbps, n_q", [("0.2", 1), ("0.45", 2), ("0.6", 3), ("64", 3)])
def test_kbps_picks_the_largest_n_q_that_fits(tmp_path, capsys, models, speech_wav, kbps, n_q):
    # tiny model: 50 frames/s * log2(16) bits = 200 bit/s per codebook
    assert cli(capsys, "encode", speech_wav, tmp_path / "t.rvqt", "--model", models["tiny"], "--kbps", kbps)[0] == 0
    assert read_header(tmp_path / "t.rvqt").n_q == n_q


def test_kbps_too_low_lists_the_available_bitrates(tmp_path, capsys, models, speech_wav):
    line = assert_fails(capsys, tmp_path, ["encode", speech_wav, tmp_path / "t.rvqt", "--model", models["tiny"],
                                           "--kbps", "0.1"], "no bitrate of this model fits in 0.1 kbps")
    assert "0.2, 0.4, 0.6 kbps" in line


@pytest.mark.parametrize("args, fragment, code", [
    (["--n-q", "4"], "n_q must be between 1 and 3", 1),
    (["--n-q", "0"], "argument --n-q: must be a positive integer, got 0", 2),
    (["--n-q", "two"], "argument --n-q: invalid positive integer value: 'two'", 2),
    (["--kbps", "-1"], "argument --kbps: must be a positive number, got -1", 2),
    (["--kbps", "nan"], "argument --kbps: must be a positive number, got nan", 2),
    (["--n-q", "1", "--kbps", "1"], "argument --kbps: not allowed with argument --n-q", 2),
])
def test_invalid_n_q_or_kbps(tmp_path, capsys, models, speech_wav, args, fragment, code):
    assert_fails(capsys, tmp_path, ["encode", speech_wav, tmp_path / "t.rvqt", "--model", models["tiny"], *args],
                 fragment, code)


def test_n_q_selects_codebooks(tmp_path, capsys, models, speech_wav):
    assert cli(capsys, "encode", speech_wav, tmp_path / "t.rvqt", "--model", models["tiny"], "--n-q", "2")[0] == 0
    model = codec.load(models["tiny"])
    assert torch.equal(read_tokens(tmp_path / "t.rvqt").codes, model.encode(load_audio(speech_wav)[0][None], n_q=2))


def test_info_describes_the_file(tmp_path, capsys, models, stereo_44k):
    tokens = tmp_path / "s.rvqt"
    header = encode_file(stereo_44k, tokens, model=models["tiny"], n_q=2)
    code, out, err = cli(capsys, "info", tokens)
    assert code == 0 and err == ""
    fields = dict(line.split(":", 1) for line in out.strip().splitlines())
    fields = {key: value.strip() for key, value in fields.items()}
    duration = header.num_samples / 44100
    size = tokens.stat().st_size
    assert fields["model"] == str(models["tiny"])
    assert fields["fingerprint"] == codec.load(models["tiny"]).fingerprint()
    assert fields["sample rate"] == "44100 Hz (model: 16000 Hz)"
    assert fields["channels"] == "2"
    assert fields["duration"].startswith(f"{duration:.3f} s ({header.num_samples} samples")
    assert fields["n_q"].startswith(f"2 codebooks of 16 codes, {header.num_frames} frames")
    assert fields["payload"] == f"entropy-coded (statistics {header.entropy_model})"
    nominal = 2 * 2 * header.num_frames * 4 / duration                    # channels * n_q * F * 4 bits
    assert fields["nominal bitrate"].startswith(f"{nominal / 1000:.3f} kbps")
    assert fields["actual bitrate"].startswith(f"{size * 8 / duration / 1000:.3f} kbps")


# ---------------------------------------------------------------- models
def test_decoding_with_another_model_is_refused(tmp_path, capsys, models, speech_wav):
    tokens = tmp_path / "t.rvqt"
    encode_file(speech_wav, tokens, model=models["tiny"])
    line = assert_fails(capsys, tmp_path, ["decode", tokens, tmp_path / "o.wav", "--model", models["other"]],
                        "the token file was made by model")
    tiny, other = codec.load(models["tiny"]).fingerprint(), codec.load(models["other"]).fingerprint()
    for name in (str(models["tiny"]), tiny, str(models["other"]), other):
        assert name in line


def test_a_version_1_file_with_the_old_full_state_fingerprint_still_decodes(tmp_path, capsys, models, speech_wav):
    """Files written before format version 2 carry JSON headers and a digest of the full state
    (EMA sums included); the model they came from, loaded from its full file, decodes them."""
    import dataclasses
    import json
    import struct
    import zlib

    new = tmp_path / "new.rvqt"
    header = encode_file(speech_wav, new, model=models["tiny"])
    model = codec.load(models["tiny"])
    assert model.full_fingerprint() != model.fingerprint()
    old_header = dataclasses.replace(header, model_fingerprint=model.full_fingerprint())
    raw = json.dumps(dataclasses.asdict(old_header), sort_keys=True, separators=(",", ":")).encode()
    payload = token_payload(new.read_bytes())
    body = b"RVQT\x01" + struct.pack("<I", len(raw)) + raw + struct.pack("<Q", len(payload)) + payload
    old = tmp_path / "old.rvqt"
    old.write_bytes(body + struct.pack("<I", zlib.crc32(body)))
    assert cli(capsys, "decode", old, tmp_path / "old.wav")[0] == 0
    assert cli(capsys, "decode", new, tmp_path / "new.wav")[0] == 0
    assert np.array_equal(sf.read(tmp_path / "old.wav")[0], sf.read(tmp_path / "new.wav")[0])


def test_a_missing_model_named_in_the_file_asks_for_one(tmp_path, capsys, models, speech_wav):
    moved = tmp_path / "model"
    codec.load(models["tiny"]).save(moved)
    tokens = tmp_path / "t.rvqt"
    encode_file(speech_wav, tokens, model=moved)
    for f in moved.iterdir():
        f.unlink()
    moved.rmdir()
    assert_fails(capsys, tmp_path, ["decode", tokens, tmp_path / "o.wav"], "pass the model with --model")
    assert cli(capsys, "decode", tokens, tmp_path / "o.wav", "--model", models["tiny"])[0] == 0


def test_the_default_model_names_the_bundled_ones(tmp_path, capsys, monkeypatch, speech_wav):
    monkeypatch.setattr("codec.pretrained.PRETRAINED_DIR", tmp_path / "none")
    assert_fails(capsys, tmp_path, ["encode", speech_wav, tmp_path / "t.rvqt"],
                 "speech16k: no such model file or directory, and no bundled model of that name (bundled: ")


def test_a_model_without_codebooks_cannot_make_tokens(tmp_path, capsys, speech_wav):
    tiny_model("ae").save(tmp_path / "ae")
    assert_fails(capsys, tmp_path, ["encode", speech_wav, tmp_path / "t.rvqt", "--model", tmp_path / "ae"],
                 "is a 'ae' model; token files need a quantizing model")


# ---------------------------------------------------------------- errors and safety
@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, Path]:
    (tmp_path / "text.wav").write_text("this is not audio\n")
    (tmp_path / "nothing.wav").write_bytes(b"")
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), dtype=np.float32), 16000)
    nan = np.full((4000, 1), 0.1, dtype=np.float32)
    nan[3000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, 16000, subtype="FLOAT")
    inf = np.full((40000, 2), 0.1, dtype=np.float32)
    inf[39000, 1] = np.inf                                                  # in the last chunk only
    sf.write(tmp_path / "inf.wav", inf, 16000, subtype="FLOAT")
    return {p.stem: p for p in tmp_path.iterdir()}


@pytest.mark.parametrize("name, fragment", [
    ("missing", "no such audio file"),
    ("text", "cannot read"),
    ("nothing", "cannot read"),
    ("empty", "contains no samples"),
    ("nan", "contains NaN or infinite samples"),
    ("inf", "contains NaN or infinite samples"),
])
def test_bad_audio_input(tmp_path, capsys, models, bad_inputs, name, fragment):
    source = bad_inputs.get(name, tmp_path / "missing.wav")
    assert_fails(capsys, tmp_path, ["encode", source, tmp_path / "t.rvqt", "--model", models["tiny"],
                                    "--kbps", "1"], fragment)


@pytest.fixture
def tokens(tmp_path, models, speech_wav) -> Path:
    path = tmp_path / "t.rvqt"
    encode_file(speech_wav, path, model=models["tiny"])
    return path


@pytest.mark.parametrize("damage, fragment", [
    (lambda data: data[:-1] + bytes([data[-1] ^ 1]), "checksum mismatch"),
    (lambda data: data[:20], "checksum mismatch"),                  # truncated: the last 4 bytes are no CRC
    (lambda data: data[:8], "too short to hold the checksum"),
    (lambda data: b"RIFF" + data[4:], "not a token file: bad magic"),
    (lambda data: b"", "not a token file"),
])
def test_corrupt_token_files(tmp_path, capsys, tokens, damage, fragment):
    tokens.write_bytes(damage(tokens.read_bytes()))
    for command in (["decode", tokens, tmp_path / "o.wav"], ["info", tokens]):
        assert_fails(capsys, tmp_path, command, fragment)


def test_missing_token_file(tmp_path, capsys):
    for command in (["decode", tmp_path / "no.rvqt", tmp_path / "o.wav"], ["info", tmp_path / "no.rvqt"]):
        assert_fails(capsys, tmp_path, command, "no such token file")


def test_existing_outputs_are_kept_without_force(tmp_path, capsys, models, speech_wav, tokens):
    (tmp_path / "o.wav").write_bytes(b"keep me")
    assert_fails(capsys, tmp_path, ["encode", speech_wav, tokens, "--model", models["tiny"]], "exists; pass --force")
    assert_fails(capsys, tmp_path, ["decode", tokens, tmp_path / "o.wav"], "exists; pass --force")
    assert (tmp_path / "o.wav").read_bytes() == b"keep me"
    assert cli(capsys, "decode", tokens, tmp_path / "o.wav", "--force")[0] == 0
    assert sf.info(str(tmp_path / "o.wav")).frames == sf.info(str(speech_wav)).frames
    assert cli(capsys, "encode", speech_wav, tokens, "--model", models["tiny"], "--force", "--n-q", "1")[0] == 0
    assert read_header(tokens).n_q == 1


@pytest.mark.parametrize("target, fragment", [
    ("no/such/folder/o.wav", "folder no/such/folder does not exist"),
    (".", "output is a folder"),
    ("o.xyz", "cannot tell the audio format from the suffix"),
])
def test_unwritable_audio_outputs(tmp_path, capsys, monkeypatch, tokens, target, fragment):
    monkeypatch.chdir(tmp_path)
    assert_fails(capsys, tmp_path, ["decode", tokens, target], fragment)


def test_unwritable_token_outputs(tmp_path, capsys, monkeypatch, models, speech_wav):
    monkeypatch.chdir(tmp_path)
    for target, fragment in [("no/such/t.rvqt", "folder no/such does not exist"), (".", "output is a folder")]:
        assert_fails(capsys, tmp_path, ["encode", speech_wav, target, "--model", models["tiny"]], fragment)


def test_interrupt_exits_130_and_leaves_no_partial_file(tmp_path, capsys, monkeypatch, tokens):
    from codec.streaming import DecodedSignal

    def interrupted(self, start, stop):                 # Ctrl-C once the output's temp file exists
        assert any(p.name.endswith(".tmp.wav") for p in tmp_path.iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(DecodedSignal, "_read", interrupted)
    before = files(tmp_path)
    assert main(["decode", str(tokens), str(tmp_path / "o.wav")]) == 130
    out, err = capsys.readouterr()
    assert err == "codec: interrupted\n" and out == ""
    assert files(tmp_path) == before


def test_usage_errors_are_one_line(tmp_path, capsys):
    assert_fails(capsys, tmp_path, [], "the following arguments are required: COMMAND", code=2)
    assert_fails(capsys, tmp_path, ["encode"], "the following arguments are required: IN_AUDIO, OUT_TOKENS", code=2)
    assert_fails(capsys, tmp_path, ["frobnicate"], "invalid choice: 'frobnicate'", code=2)


def test_train_and_bench_errors_are_one_line(tmp_path, capsys):
    assert_fails(capsys, tmp_path, ["train", tmp_path / "nope.toml"], "nope.toml: no such recipe file")
    (tmp_path / "bad.toml").write_text("[train]\nstepz = 3\n")
    assert_fails(capsys, tmp_path, ["train", tmp_path / "bad.toml"], "unknown TrainConfig fields: stepz")
    assert cli(capsys, "bench")[0] == 2                                     # --audio and --out are required


def test_python_dash_m_codec_runs_the_cli(tmp_path, models, speech_wav):
    run = lambda *argv: subprocess.run([sys.executable, "-m", "codec", *map(str, argv)], cwd=REPO,
                                       capture_output=True, text=True, timeout=120)
    ok = run("encode", speech_wav, tmp_path / "t.rvqt", "--model", models["tiny"], "--kbps", "0.45")
    assert ok.returncode == 0 and ok.stderr == "" and "n_q 2" in ok.stdout
    bad = run("info", tmp_path / "missing.rvqt")
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr == f"codec: error: no such token file: {tmp_path / 'missing.rvqt'}\n"


def test_decoding_that_clips_says_so_in_one_line(tmp_path, capsys, models, speech_wav):
    loud = codec.load(models["tiny"])
    with torch.no_grad():
        loud.decoder.net[-1].conv.parametrizations.weight.original0.mul_(1000.0)   # the output layer's gain
    folder = loud.save(tmp_path / "loud")
    tokens, out = tmp_path / "speech.rvqt", tmp_path / "speech.wav"
    assert cli(capsys, "encode", speech_wav, tokens, "--model", folder)[0] == 0
    code, stdout, err = cli(capsys, "decode", tokens, out, "-q")
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1, err
    assert re.fullmatch(r"codec: warning: .*speech\.wav: \d+ samples beyond full scale were clipped "
                        r"\(peak \d+\.\d\d, \+\d+\.\d dBFS\)", lines[0]), lines[0]
    assert load_audio(out)[0].abs().max() <= 1.0


def test_sigterm_while_decoding_leaves_no_partial_file(tmp_path, capsys, models, speech_wav):
    tokens, out = tmp_path / "speech.rvqt", tmp_path / "speech.wav"
    assert cli(capsys, "encode", speech_wav, tokens, "--model", models["tiny"])[0] == 0
    script = (                       # SIGTERM arrives while the first block is being written
        "import os, signal, sys, soundfile\n"
        "write = soundfile.SoundFile.write\n"
        "def write_then_term(self, data):\n"
        "    write(self, data)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "soundfile.SoundFile.write = write_then_term\n"
        "from codec.cli import main\n"
        f"sys.exit(main(['decode', {str(tokens)!r}, {str(out)!r}, '-q']))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 143, (run.returncode, run.stderr)
    assert run.stderr.strip() == "codec: terminated"
    assert files(tmp_path) == {"speech.rvqt"}                 # no output, no hidden temporary
