"""Audio I/O: round trips with stated tolerances, resampling against the exact sine, every error path."""
from __future__ import annotations

import math
import os
from contextlib import contextmanager

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

import codec.audio
from codec.audio import (AudioError, audio_info, load_audio, resample, resampled_length, save_audio, sinc_resample,
                         to_mono)
from tests.helpers import run_with_memory_headroom

PCM16_STEP = 1.0 / 32768  # libsndfile's float <-> int16 round trip is within one step


def sine(freq: float, sample_rate: int, seconds: float, phase: float = 0.0) -> torch.Tensor:
    t = torch.arange(int(seconds * sample_rate), dtype=torch.float64) / sample_rate
    return (0.5 * torch.sin(2 * math.pi * freq * t + phase)).float()


def peak_frequency(x: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(x * torch.hann_window(x.shape[-1]))
    return float(spectrum.abs().argmax()) * sample_rate / x.shape[-1]


@contextmanager
def raises_audio_error(fragment: str):
    """Expects exactly AudioError (not a subclass) with ``fragment`` in its message."""
    with pytest.raises(AudioError, match=fragment) as info:
        yield info
    assert type(info.value) is AudioError


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_round_trip_within_pcm16_step_and_keeps_stereo(tmp_path, torch_rng, suffix):
    wav = torch.rand(2, 4000, generator=torch_rng) * 1.8 - 0.9  # (C, T)
    path = tmp_path / f"x{suffix}"
    save_audio(path, wav, 22050)
    loaded, sr = load_audio(path)
    assert sr == 22050
    assert loaded.shape == (2, 4000) and loaded.dtype == torch.float32
    assert (loaded - wav).abs().max() <= PCM16_STEP
    assert sf.info(str(path)).format == suffix[1:].upper()


def test_real_speech_round_trips_exactly_through_flac(tmp_path, speech_wav):
    wav, sr = load_audio(speech_wav)
    assert sr == 16000 and wav.shape[0] == 1 and 3 * sr < wav.shape[1] <= 6 * sr
    save_audio(tmp_path / "speech.flac", wav, sr)
    again, sr2 = load_audio(tmp_path / "speech.flac")
    assert sr2 == sr and torch.equal(again, wav)  # PCM16 in, PCM16 out: lossless


def test_float_subtype_is_exact(tmp_path, torch_rng):
    wav = torch.randn(1, 1000, generator=torch_rng) * 0.3
    save_audio(tmp_path / "f.wav", wav, 8000, subtype="FLOAT")
    assert torch.equal(load_audio(tmp_path / "f.wav")[0], wav)


def test_lossy_ogg_keeps_the_waveform(tmp_path, speech_wav):
    wav, sr = load_audio(speech_wav)
    save_audio(tmp_path / "speech.ogg", wav, sr)
    back, sr2 = load_audio(tmp_path / "speech.ogg")
    assert sr2 == sr and back.shape == wav.shape
    assert np.corrcoef(back[0].numpy(), wav[0].numpy())[0, 1] > 0.98


def test_integer_subtypes_clip_instead_of_wrapping(tmp_path):
    with pytest.warns(codec.audio.ClippingWarning, match="2 samples beyond full scale"):
        save_audio(tmp_path / "loud.wav", torch.tensor([[1.5, -1.5, 0.25]]), 8000)
    loaded, _ = load_audio(tmp_path / "loud.wav")
    assert loaded[0, 0] > 0.99 and loaded[0, 1] == -1.0 and loaded[0, 2] == 0.25


def test_one_dimensional_input_is_saved_as_mono(tmp_path):
    save_audio(tmp_path / "m.wav", torch.zeros(100), 8000)
    assert audio_info(tmp_path / "m.wav").channels == 1


def test_window_read_equals_slice_of_full_read(speech_wav):
    full, _ = load_audio(speech_wav)
    part, _ = load_audio(speech_wav, start=1000, frames=500)
    assert torch.equal(part, full[:, 1000:1500])
    info = audio_info(speech_wav)
    assert (info.sample_rate, info.channels, info.frames) == (16000, 1, full.shape[1])


def test_saved_file_gets_the_usual_permissions(tmp_path):
    save_audio(tmp_path / "p.wav", torch.zeros(1, 10), 8000)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "p.wav").stat().st_mode & 0o777 == 0o666 & ~umask


# ----------------------------------------------------------------- resampling

@pytest.mark.parametrize("from_sr,to_sr", [(44100, 16000), (16000, 24000), (48000, 16000)])
def test_resampled_sine_matches_the_exact_sine(from_sr, to_sr):
    x = sine(1000.0, from_sr, 0.5)
    y = resample(x.unsqueeze(0), from_sr, to_sr)  # (1, T')
    assert y.shape[-1] == resampled_length(x.shape[-1], from_sr, to_sr) == math.ceil(0.5 * to_sr)
    assert abs(peak_frequency(y[0], to_sr) - 1000.0) <= to_sr / y.shape[-1]
    exact = sine(1000.0, to_sr, 0.5)
    interior = slice(200, -200)  # away from the zero padding at the ends
    assert (y[0, interior] - exact[interior]).abs().max() < 2e-3


COMMON_RATES = [8000, 16000, 22050, 24000, 44100, 48000, 96000]


@pytest.mark.parametrize("from_sr", COMMON_RATES)
@pytest.mark.parametrize("to_sr", [16000, 24000, 44100, 48000])
def test_sinc_resample_equals_torchaudio_on_common_rates(from_sr, to_sr):
    """The tap-by-tap filter of odd rate pairs is torchaudio's: equal to 1e-4 on unit noise."""
    if from_sr == to_sr:
        return
    x = torch.randn(2, 2345, generator=torch.Generator().manual_seed(from_sr + to_sr))
    g = math.gcd(from_sr, to_sr)
    expected = torchaudio.functional.resample(x, from_sr, to_sr)
    got = sinc_resample(x, from_sr // g, to_sr // g)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() < 1e-4


@pytest.mark.parametrize("from_sr,to_sr", [(44101, 16000), (16000, 44101), (8001, 16000), (11127, 16000)])
def test_coprime_rates_resample_a_second_in_bounded_memory(from_sr, to_sr):
    """Issue 31 row 2: with 300 MiB of address space to spare (torchaudio's kernel for 44101 Hz
    alone is 2.8 GB), a second of audio resamples to the right length and keeps a 1 kHz tone."""
    result = run_with_memory_headroom(
        "import math, torch\nfrom codec.audio import resample, resampled_length",
        f"t = torch.arange({from_sr}) / {from_sr}\n"
        "x = torch.sin(2 * math.pi * 1000 * t)[None]\n"
        f"y = resample(x, {from_sr}, {to_sr})\n"
        f"exact = torch.sin(2 * math.pi * 1000 * torch.arange(y.shape[1]) / {to_sr})\n"
        f"assert y.shape[1] == resampled_length({from_sr}, {from_sr}, {to_sr})\n"
        "print(float((y[0, 200:-200] - exact[200:-200]).abs().max()))\n",
        headroom=300 << 20)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout) < 2e-3


def test_resample_same_rate_is_identity():
    x = torch.randn(2, 100)
    assert resample(x, 16000, 16000) is x


def test_resample_rejects_bad_rates():
    with raises_audio_error("positive integer"):
        resample(torch.zeros(1, 10), 16000, 0)
    with raises_audio_error("positive integer"):
        resample(torch.zeros(1, 10), 44100.5, 16000)
    with raises_audio_error("9999991 Hz is above the 768000 Hz"):
        resample(torch.zeros(1, 10), 16000, 9_999_991)          # would need a 640 GB kernel


@pytest.mark.parametrize("rate", [0, 768_001, 2_000_000_001])
def test_a_header_claiming_an_absurd_rate_is_a_one_line_error(tmp_path, rate):
    import struct
    path = tmp_path / "absurd.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    fmt = data.index(b"fmt ")
    struct.pack_into("<II", data, fmt + 12, rate, min(2 * rate, 2**32 - 1))   # sample rate, bytes per second
    path.write_bytes(bytes(data))
    message = f"claims a sample rate of {rate} Hz; audio files must be 1 to 768000 Hz"
    if rate:                                      # libsndfile itself refuses a rate of 0
        with raises_audio_error(message):
            audio_info(path)
    with raises_audio_error(message if rate else "cannot read"):
        load_audio(path)


# ----------------------------------------------------------------------- mono

def test_to_mono_averages_or_picks_a_channel():
    wav = torch.stack([torch.ones(5), -3 * torch.ones(5)])  # (2, 5)
    assert torch.equal(to_mono(wav), -torch.ones(1, 5))
    assert torch.equal(to_mono(wav, channel=1), -3 * torch.ones(1, 5))
    assert torch.equal(to_mono(wav, channel=-2), torch.ones(1, 5))
    with raises_audio_error("channel 2 out of range for audio with 2 channel"):
        to_mono(wav, channel=2)
    with raises_audio_error(r"expected audio shaped \(C, T\)"):
        to_mono(torch.zeros(5))


# --------------------------------------------------------------------- errors

def test_missing_file(tmp_path):
    with raises_audio_error("no such audio file"):
        load_audio(tmp_path / "nope.wav")
    with raises_audio_error("no such audio file"):
        audio_info(tmp_path / "nope.wav")


def test_folder_is_not_a_file(tmp_path):
    with raises_audio_error("not a file"):
        load_audio(tmp_path)


def test_not_audio(tmp_path):
    (tmp_path / "notes.wav").write_text("these are not samples\n" * 20)
    with raises_audio_error("cannot read .*notes.wav as audio"):
        load_audio(tmp_path / "notes.wav")
    with raises_audio_error("cannot read .*notes.wav as audio"):
        audio_info(tmp_path / "notes.wav")


def test_zero_length_audio(tmp_path):
    sf.write(str(tmp_path / "empty.wav"), np.zeros((0, 1)), 16000)
    with raises_audio_error("contains no samples"):
        load_audio(tmp_path / "empty.wav")


def test_window_past_the_end_has_no_samples(speech_wav):
    with raises_audio_error("contains no samples"):
        load_audio(speech_wav, start=10**7, frames=100)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples(tmp_path, bad):
    sf.write(str(tmp_path / "bad.wav"), np.array([[0.1], [bad], [0.2]]), 16000, subtype="FLOAT")
    with raises_audio_error("contains NaN or infinite samples"):
        load_audio(tmp_path / "bad.wav")


@pytest.mark.parametrize("wav,rate,name,fragment", [
    (torch.zeros(1, 10), 16000, "x.xyz", "cannot tell the audio format"),
    (torch.zeros(1, 10), 16000, "noext", "cannot tell the audio format"),
    (torch.tensor([[0.0, float("nan")]]), 16000, "x.wav", "refusing to save NaN"),
    (torch.zeros(1, 1, 10), 16000, "x.wav", "expected non-empty audio"),
    (torch.zeros(1, 0), 16000, "x.wav", "expected non-empty audio"),
    (torch.zeros(1, 10), -5, "x.wav", "positive integer"),
])
def test_save_rejects_bad_input_and_writes_nothing(tmp_path, wav, rate, name, fragment):
    with raises_audio_error(fragment):
        save_audio(tmp_path / name, wav, rate)
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_folder(tmp_path):
    with raises_audio_error("folder does not exist"):
        save_audio(tmp_path / "no" / "x.wav", torch.zeros(1, 10), 16000)


# ---------------------------------------------------------------- atomic save

def test_failed_libsndfile_write_leaves_nothing(tmp_path):
    with raises_audio_error("cannot write"):
        save_audio(tmp_path / "x.ogg", torch.zeros(1, 10), 16000, subtype="PCM_16")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [RuntimeError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch, error):
    target = tmp_path / "x.wav"
    save_audio(target, torch.full((1, 50), 0.25), 8000)
    before = target.read_bytes()

    real_write = codec.audio.sf.SoundFile.write

    def half_write(self, data):
        real_write(self, data[: len(data) // 2])  # half the samples reach the file, then the failure
        raise error

    monkeypatch.setattr(codec.audio.sf.SoundFile, "write", half_write)
    with pytest.raises((AudioError, KeyboardInterrupt)) as info:
        save_audio(target, torch.zeros(1, 50), 8000)
    assert type(info.value) is (AudioError if isinstance(error, RuntimeError) else KeyboardInterrupt)
    assert [p.name for p in tmp_path.iterdir()] == ["x.wav"]
    assert target.read_bytes() == before


# ---------------------------------------------------------------- clipping
def test_clipping_on_writing_integer_samples_is_reported_with_the_peak(tmp_path):
    wav = torch.tensor([[0.5, 2.0, -3.0, 1.5, -1.0]])
    with pytest.warns(codec.audio.ClippingWarning,
                      match=r"3 samples beyond full scale were clipped \(peak 3\.00, \+9\.5 dBFS\)"):
        save_audio(tmp_path / "loud.wav", wav, 16000)
    assert load_audio(tmp_path / "loud.wav")[0].abs().max() <= 1.0
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                     # any warning fails the test
        save_audio(tmp_path / "float.wav", wav, 16000, subtype="FLOAT")   # float keeps them: no warning
        save_audio(tmp_path / "quiet.wav", wav / 3, 16000)                 # peak exactly 1: nothing clipped
    assert torch.equal(load_audio(tmp_path / "float.wav")[0], wav)
