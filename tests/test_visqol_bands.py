"""tools/visqol_bands.py: per-band ViSQOL similarity of the systems of a benchmark run's audio."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.audio import load_audio, save_audio

pytest.importorskip("visqol")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("visqol_bands", ROOT / "tools" / "visqol_bands.py")
visqol_bands = importlib.util.module_from_spec(spec)
sys.modules["visqol_bands"] = visqol_bands
spec.loader.exec_module(visqol_bands)


def lowpass(x: np.ndarray, sample_rate: int, cutoff: float) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    spectrum[np.fft.rfftfreq(len(x), 1 / sample_rate) > cutoff] = 0
    return np.fft.irfft(spectrum, len(x))


@pytest.fixture
def run(tmp_path, speech_wav):
    wav, sr = load_audio(speech_wav)
    ref = wav[0].double().numpy()
    clip = tmp_path / "audio" / "speech__example"
    clip.mkdir(parents=True)
    for name, x in {"reference": ref, "copy": ref, "lowpass": lowpass(ref, sr, 2000)}.items():
        save_audio(clip / f"{name}.wav", torch.from_numpy(np.asarray(x, dtype=np.float32))[None], sr)
    return tmp_path


def test_a_copy_is_similar_everywhere_and_a_lowpass_loses_only_the_high_bands(run):
    freqs, sims, mos, used = visqol_bands.band_similarities(run, ["copy", "lowpass"])
    assert used == 1 and sims["copy"].shape == (1, len(freqs))
    assert sims["copy"].min() > 0.99 and mos["copy"][0] > 4.4
    low, high = freqs < 1500, freqs > 3000
    assert sims["lowpass"][0, low].min() > 0.9            # untouched below the cutoff
    assert sims["lowpass"][0, high].max() < 0.5           # nothing left above it
    table = visqol_bands.format_table(freqs, sims, mos, used)
    assert "mean over 1 clips" in table and table.count("\n") == len(freqs) + 3


def test_an_unknown_system_names_the_known_ones(run, capsys):
    assert visqol_bands.main([str(run), "opus-6kbps"]) == 2
    err = capsys.readouterr().err
    assert "no decoded audio for system 'opus-6kbps'" in err and "copy, lowpass" in err


def test_a_folder_that_is_not_a_bench_run_is_refused(tmp_path, capsys):
    assert visqol_bands.main([str(tmp_path), "copy"]) == 2
    assert "has no audio/ folder" in capsys.readouterr().err


def test_music_clips_of_the_run_are_left_out_and_max_clips_must_be_positive(run, capsys):
    (run / "results.csv").write_text("clip,kind,system\nspeech__example,music,copy\n")
    assert visqol_bands.main([str(run), "copy"]) == 2
    assert "no speech clips under" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        visqol_bands.main([str(run), "copy", "--max-clips", "0"])
