"""Sanity of the benchmark's quality metrics on real speech: identity and white noise at falling SNRs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from codec.metrics import (
    METRICS,
    applicable,
    available_metrics,
    compute_metrics,
    log_mel_distance,
    metric_versions,
    resample_array,
    si_sdr_db,
    stft_distance,
)

SNRS_DB = (40.0, 30.0, 20.0)       # above ~15 dB every metric here is still off its floor


@pytest.fixture(scope="module")
def speech(speech_wav) -> tuple[np.ndarray, int]:
    x, sr = sf.read(str(speech_wav), dtype="float64")
    return x, sr


def with_noise(x: np.ndarray, snr_db: float, seed: int = 1234) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(len(x))
    noise *= math.sqrt(np.mean(x**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
    return x + noise


@pytest.fixture(scope="module")
def noisy_scores(speech) -> list[dict[str, float]]:
    x, sr = speech
    return [compute_metrics(x, with_noise(x, snr), sr, "speech") for snr in SNRS_DB]


def test_identical_signals_score_perfectly(speech):
    x, sr = speech
    scores = compute_metrics(x, x.copy(), sr, "speech")
    assert scores["si_sdr"] > 100
    assert scores["log_mel"] == 0.0 and scores["mrstft"] == 0.0
    if "pesq" in scores:
        assert scores["pesq"] == pytest.approx(4.64, abs=0.01)
    if "stoi" in scores:
        assert scores["stoi"] > 0.9999
    if "visqol" in scores:
        assert scores["visqol"] > 4.4


@pytest.mark.parametrize("name", list(METRICS))
def test_white_noise_lowers_quality_monotonically(noisy_scores, name):
    if name not in available_metrics():
        pytest.skip(f"{METRICS[name].package} is not installed (pip install 'rvqcodec[bench]')")
    values = [scores[name] for scores in noisy_scores]       # SNR falling
    if METRICS[name].higher_is_better:
        assert all(a > b for a, b in zip(values, values[1:])), values
    else:
        assert all(a < b for a, b in zip(values, values[1:])), values


def test_si_sdr_of_white_noise_is_its_snr(noisy_scores):
    # SI-SDR rescales the reference, so for independent noise it is the SNR itself, to within
    # the little correlation a finite noise draw has with the speech.
    for snr, scores in zip(SNRS_DB, noisy_scores):
        assert scores["si_sdr"] == pytest.approx(snr, abs=0.2)


def test_only_si_sdr_ignores_a_gain(speech):
    x, sr = speech
    assert si_sdr_db(x, 0.5 * x) > 100
    # |log(M + eps) - log(M/2 + eps)| is log 2 where M >> eps, less in the quiet bins
    assert 0.55 < log_mel_distance(x, 0.5 * x, sr) <= math.log(2)
    assert stft_distance(x, 0.5 * x) > 0.5                  # spectral convergence alone gives 0.5


def test_music_leaves_out_speech_metrics(speech):
    x, sr = speech
    names = ["pesq", "stoi", "si_sdr", "log_mel", "mrstft"]
    scores = compute_metrics(x, with_noise(x, 30), sr, "music", names)
    assert set(scores) == {"si_sdr", "log_mel", "mrstft"}
    assert not applicable("pesq", "music") and applicable("visqol", "music")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # pesq normalises 0 / 0 before it gives up
def test_pesq_cannot_score_silence(speech):
    pytest.importorskip("pesq")
    from codec.metrics import pesq_wideband
    x, sr = speech
    silence = np.zeros_like(x)
    assert math.isnan(pesq_wideband(silence, silence, sr))     # no speech in the reference
    assert math.isnan(pesq_wideband(x, silence, sr))           # a codec that decodes to silence


def test_stoi_is_undefined_on_too_little_speech(speech):
    pytest.importorskip("pystoi")
    from codec.metrics import stoi_score
    x, sr = speech
    short = x[: int(0.3 * sr)].copy()                          # under 30 STOI frames of 25.6 ms
    assert math.isnan(stoi_score(short, short, sr))           # pystoi itself returns 1e-5
    longer = x[: int(1.5 * sr)].copy()
    assert stoi_score(longer, longer, sr) > 0.9999


def test_bad_inputs_are_refused(speech):
    x, sr = speech
    with pytest.raises(ValueError, match="unknown metrics"):
        compute_metrics(x, x, sr, "speech", ["loudness"])
    with pytest.raises(ValueError, match="one length"):
        si_sdr_db(x, x[:-1])
    with pytest.raises(ValueError, match="kind must be"):
        compute_metrics(x, x, sr, "noise", ["si_sdr"])


def test_resample_array_keeps_a_tone():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 440 * t)
    up = resample_array(tone, 16000, 48000)
    assert up.shape == (48000,) and up.dtype == np.float64
    expected = np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)
    assert np.max(np.abs(up[200:-200] - expected[200:-200])) < 1e-2


def test_versions_name_what_computes_each_metric():
    versions = metric_versions()
    assert set(versions) == set(METRICS)
    assert versions["si_sdr"] == "codec.losses"
    for name in available_metrics():
        if METRICS[name].package:
            assert versions[name].startswith(METRICS[name].package)


def test_visqol_is_nan_for_a_clip_too_short_for_its_patches(speech_wav):
    pytest.importorskip("visqol")
    from codec.audio import load_audio
    from codec.metrics import visqol_score
    wav, sr = load_audio(speech_wav)
    short = wav[0, 16000:16000 + int(0.376 * sr)].double().numpy()      # the length of a held-out prompt
    assert np.isnan(visqol_score(short, short, sr, "speech"))
