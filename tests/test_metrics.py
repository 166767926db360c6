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


# ---------------------------------------------------------------------------- active speech level
def _active_level_slow(x: np.ndarray, sample_rate: int) -> float:
    """ITU-T P.56 method B written out sample by sample, as the Recommendation states it."""
    g = math.exp(-1 / (sample_rate * 0.03))
    hangover = math.ceil(0.2 * sample_rate)
    thresholds = [2.0 ** -k for k in range(15, -1, -1)]
    counts, holds = [0] * 16, [hangover + 1] * 16
    p = q = 0.0
    for sample in x:
        p = g * p + (1 - g) * abs(sample)
        q = g * q + (1 - g) * p
        for j, c in enumerate(thresholds):
            if q >= c:
                counts[j] += 1
                holds[j] = 0
            elif holds[j] < hangover:
                counts[j] += 1
                holds[j] += 1
            else:
                holds[j] = hangover + 1
    energy = float(np.sum(x ** 2))
    previous = None
    for j, c in enumerate(thresholds):
        if counts[j] == 0:                  # silent, or activity ran out before the margin was crossed
            return math.nan
        level = 10 * math.log10(energy / counts[j])
        excess = level - 20 * math.log10(c) - 15.9
        if excess <= 0:
            if previous is None:
                return math.nan
            t = previous[1] / (previous[1] - excess)
            return previous[0] + t * (level - previous[0])
        previous = (level, excess)
    return math.nan                         # active above the margin at every threshold


def test_active_speech_level_matches_a_sample_by_sample_p56(speech, rng):
    from codec.metrics import active_speech_level_dbov
    x, sr = speech
    clip = 0.5 * x[: sr]                                         # 1 s of real speech
    pauses = np.concatenate([0.3 * rng.standard_normal(sr // 2), np.zeros(sr), 0.1 * rng.standard_normal(sr // 4)])
    burst = np.concatenate([np.zeros(sr // 2), 0.5 * rng.standard_normal(sr // 50), np.zeros(sr // 2)])   # 20 ms
    for signal in (clip, pauses, burst):
        assert active_speech_level_dbov(signal, sr) == pytest.approx(_active_level_slow(signal, sr), abs=1e-9)
    impulse, silence = np.zeros(sr), np.zeros(sr)
    impulse[100] = 1.0                                           # activity ends before the margin is crossed
    for signal in (impulse, silence):
        assert math.isnan(active_speech_level_dbov(signal, sr)) and math.isnan(_active_level_slow(signal, sr))


def test_active_speech_level_leaves_pauses_out_and_follows_the_gain(speech):
    from codec.metrics import active_speech_level_dbov
    sr = 16000
    t = np.arange(2 * sr) / sr
    sine = np.sin(2 * np.pi * 440 * t)                          # full scale: -3.01 dBov
    assert active_speech_level_dbov(sine, sr) == pytest.approx(-3.01, abs=0.1)  # its first ~40 ms not yet active
    gappy = np.concatenate([sine, np.zeros(6 * sr)])            # long-term level 6 dB lower
    assert 10 * math.log10(np.mean(gappy ** 2)) == pytest.approx(-9.03, abs=0.01)
    assert active_speech_level_dbov(gappy, sr) == pytest.approx(-3.01, abs=0.7)   # hangover: 0.2 s more
    x, sr = speech
    level = active_speech_level_dbov(x, sr)
    for gain_db in (-20.0, -6.0, 3.0):
        assert active_speech_level_dbov(x * 10 ** (gain_db / 20), sr) == pytest.approx(level + gain_db, abs=0.2)
    assert math.isnan(active_speech_level_dbov(np.zeros(sr), sr))
    assert math.isnan(active_speech_level_dbov(1e-6 * sine, sr))        # -123 dBov: under every threshold


def test_visqol_at_a_set_level_ignores_the_recorded_level_which_plain_visqol_does_not(speech, rng):
    pytest.importorskip("visqol")
    from codec.metrics import visqol_score
    x, sr = speech
    noisy = x + 0.01 * rng.standard_normal(len(x))
    at_level = [visqol_score(g * x, g * noisy, sr, "speech", level_dbov=-26) for g in (1.0, 0.2)]
    assert at_level[0] == pytest.approx(at_level[1], abs=0.005)  # the level follows a gain to ~0.1 dB
    plain = [visqol_score(g * x, g * noisy, sr, "speech") for g in (1.0, 0.2)]
    assert abs(plain[0] - plain[1]) > 0.05                      # what the option is for
    assert math.isnan(visqol_score(np.zeros(sr), np.zeros(sr), sr, "speech", level_dbov=-26))
    for bad in (float("nan"), 5.0, -100.0):
        with pytest.raises(ValueError, match="from -80 to 0"):
            visqol_score(x, noisy, sr, "speech", level_dbov=bad)
