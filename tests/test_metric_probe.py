"""tools/metric_probe.py: controlled changes to decoded audio, and the metrics' response to them."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from codec.audio import load_audio, save_audio

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("metric_probe", ROOT / "tools" / "metric_probe.py")
metric_probe = importlib.util.module_from_spec(spec)
sys.modules["metric_probe"] = metric_probe
spec.loader.exec_module(metric_probe)

SR = 16000


def band_energy(x: np.ndarray, lo: float, hi: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / SR)
    return float(spectrum[(freqs >= lo) & (freqs < hi)].sum())


def test_gain_delay_and_noise_do_exactly_what_they_say(rng):
    x = rng.standard_normal(SR)
    assert np.array_equal(metric_probe.parse_probe("gain:0.5")(x, SR), 0.5 * x)
    delayed = metric_probe.parse_probe("delay:16")(x, SR)
    assert len(delayed) == len(x) and np.all(delayed[:16] == 0) and np.array_equal(delayed[16:], x[:-16])
    noisy = metric_probe.parse_probe("noise:-40")(x, SR)
    rms = np.sqrt(np.mean((noisy - x) ** 2))
    assert rms == pytest.approx(np.abs(x).max() * 0.01, rel=0.02)        # 16,000 samples: ~0.6% spread
    assert np.array_equal(metric_probe.parse_probe("none")(x, SR), x)


def test_lowpass_removes_the_band_above_the_cutoff_and_keeps_the_rest(rng):
    x = rng.standard_normal(2 * SR)
    y = metric_probe.lowpass(x, 4000, SR)
    assert band_energy(y, 4300, 8000) < 1e-4 * band_energy(x, 4300, 8000)
    assert band_energy(y, 100, 3700) == pytest.approx(band_energy(x, 100, 3700), rel=0.01)


def test_gate_zeroes_a_quiet_tone_under_the_threshold_and_keeps_a_loud_one():
    t = np.arange(2 * SR) / SR
    loud, quiet = np.sin(2 * np.pi * 500 * t), 1e-4 * np.sin(2 * np.pi * 3000 * t)     # -80 dB
    y = metric_probe.gate(loud + quiet, -60, SR)
    inner = slice(SR // 4, -SR // 4)
    assert band_energy(y[inner], 2900, 3100) < 1e-3 * band_energy(quiet[inner], 2900, 3100)
    assert np.max(np.abs(y[inner] - loud[inner])) < 1e-3
    kept = metric_probe.gate(loud + quiet, -100, SR)          # threshold below both: nothing removed
    assert np.max(np.abs(kept[inner] - (loud + quiet)[inner])) < 1e-9


def test_pitch_postfilter_passes_a_periodic_signal_and_cleans_noise_off_it(rng):
    period = 128                                        # 125 Hz
    cycle = rng.standard_normal(period)
    x = np.tile(cycle, 2 * SR // period)
    inner = slice(1000, -1000)                          # the zero padding at the ends is not periodic
    assert np.max(np.abs(metric_probe.pitch_postfilter(x, 0.6, SR)[inner] - x[inner])) < 1e-9
    noise = 0.1 * rng.standard_normal(len(x))
    y = metric_probe.pitch_postfilter(x + noise, 1.0, SR)
    before, after = np.mean(noise[inner] ** 2), np.mean((y - x)[inner] ** 2)
    assert after < 0.6 * before                         # (x + (x[n-T] + x[n+T]) / 2) / 2: noise power x 0.375
    white = rng.standard_normal(SR)                     # no pitch: correlation under threshold, unchanged
    assert np.max(np.abs(metric_probe.pitch_postfilter(white, 0.6, SR) - white)) < 1e-9


def test_sharpen_keeps_frame_energy_and_deepens_the_valleys_between_harmonics():
    t = np.arange(2 * SR) / SR
    x = sum(np.sin(2 * np.pi * 200 * k * t) for k in range(1, 10)) + 0.05 * np.random.default_rng(0).standard_normal(len(t))
    y = metric_probe.sharpen(x, 0.5, SR)
    inner = slice(SR // 4, -SR // 4)
    assert np.sum(y[inner] ** 2) == pytest.approx(np.sum(x[inner] ** 2), rel=0.05)
    peaks = lambda s: sum(band_energy(s[inner], 200 * k - 20, 200 * k + 20) for k in range(1, 10))
    valleys = lambda s: sum(band_energy(s[inner], 200 * k + 60, 200 * k + 140) for k in range(1, 9))
    assert valleys(y) / peaks(y) < 0.5 * valleys(x) / peaks(x)
    assert np.allclose(metric_probe.sharpen(x, 0.0, SR)[inner], x[inner], atol=1e-9)


@pytest.mark.parametrize("text", ["pich:0.5", "pitch", "pitch:x", "gain:nan", "none:1", "gain:0", "delay:-1",
                                  "delay:2.5", "pitch:-1", "pitch:1.5", "gate:5", "lowpass:0", "sharpen:-0.1"])
def test_a_bad_probe_is_a_probe_error(text):
    with pytest.raises(metric_probe.ProbeError):
        metric_probe.parse_probe(text)


def test_a_cutoff_above_the_clips_nyquist_is_a_probe_error(rng):
    with pytest.raises(metric_probe.ProbeError, match="between 0 and 8000 Hz"):
        metric_probe.parse_probe("lowpass:9000")(rng.standard_normal(SR), SR)


@pytest.fixture
def run(tmp_path, speech_wav):
    wav, sr = load_audio(speech_wav)
    clip = tmp_path / "audio" / "speech__example"
    clip.mkdir(parents=True)
    save_audio(clip / "reference.wav", wav, sr)
    save_audio(clip / "copy.wav", wav, sr)
    return tmp_path


def test_probing_a_copy_of_the_reference_scores_the_probe_against_the_unchanged_copy(run):
    pytest.importorskip("pesq")
    scores = metric_probe.probe_run(run, "copy", ["lowpass:2000"], ["pesq"])
    assert list(scores[0]) == ["none", "lowpass:2000"]
    assert scores[0]["none"]["pesq"] > 4.5
    assert scores[0]["lowpass:2000"]["pesq"] < scores[0]["none"]["pesq"] - 0.5
    table = metric_probe.format_table(scores, ["pesq"])
    assert "lowpass:2000" in table and "n=1" in table


def test_the_cli_refuses_a_missing_system_or_probe_with_exit_2(run, capsys):
    assert metric_probe.main([str(run), "nosuch", "none"]) == 2
    assert "no decoded audio for system 'nosuch'" in capsys.readouterr().err
    assert metric_probe.main([str(run), "copy", "bogus:1"]) == 2
    assert "unknown probe 'bogus:1'" in capsys.readouterr().err
    assert metric_probe.main([str(run), "copy", "none", "--metrics", "mos"]) == 2
    assert "--metrics takes" in capsys.readouterr().err
    assert metric_probe.main([str(run.parent / "nowhere"), "copy", "none"]) == 2
    assert "has no audio/ folder" in capsys.readouterr().err
    assert metric_probe.main([str(run), "copy", "none", "--visqol-level", "60"]) == 2
    assert "from -80 to 0" in capsys.readouterr().err


def test_visqol_is_scored_at_the_runs_own_level_unless_told_otherwise(run, capsys):
    pytest.importorskip("visqol")
    (run / "bench.json").write_text(json.dumps({"visqol_level_dbov": -40.0}))
    assert metric_probe.main([str(run), "copy", "lowpass:2000", "--metrics", "visqol"]) == 0
    at_run_level = capsys.readouterr().out
    assert at_run_level.startswith("ViSQOL at -40 dBov")
    assert metric_probe.main([str(run), "copy", "lowpass:2000", "--metrics", "visqol", "--visqol-level", "-26"]) == 0
    assert capsys.readouterr().out.startswith("ViSQOL at -26 dBov")
    (run / "bench.json").write_text(json.dumps({"visqol_level_dbov": None}))
    assert metric_probe.main([str(run), "copy", "lowpass:2000", "--metrics", "visqol"]) == 0
    as_recorded = capsys.readouterr().out
    assert not as_recorded.startswith("ViSQOL at") and as_recorded != at_run_level


def test_visqol_level_reaches_the_scores(run):
    pytest.importorskip("visqol")
    from codec.bench import load_mono
    from codec.metrics import visqol_score
    scores = metric_probe.probe_run(run, "copy", ["lowpass:2000"], ["visqol"], visqol_level=-40.0)
    ref, sr = load_mono(run / "audio" / "speech__example" / "reference.wav")
    est, _ = load_mono(run / "audio" / "speech__example" / "copy.wav")
    expected = visqol_score(ref, metric_probe.lowpass(est, 2000, sr), sr, "speech", level_dbov=-40.0)
    assert scores[0]["lowpass:2000"]["visqol"] == pytest.approx(expected, abs=1e-9)
    plain = visqol_score(ref, metric_probe.lowpass(est, 2000, sr), sr, "speech")
    assert abs(plain - expected) > 0.01
