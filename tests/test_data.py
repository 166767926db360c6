"""Datasets: crop lengths, short clips, reproducible crops, disjoint splits, downmix, resampling."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from codec.audio import load_audio, resample, save_audio
from codec.data import AudioDataset, DataConfig, DatasetError, change_speed, make_datasets, peaking_eq, stable_split

ROOT = Path(__file__).resolve().parents[1]


def write(path: Path, wav: torch.Tensor, sample_rate: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_audio(path, wav, sample_rate, subtype="FLOAT" if path.suffix == ".wav" else None)  # exact
    return path


def sine(freq: float, sample_rate: int, seconds: float, channels: int = 1) -> torch.Tensor:
    t = torch.arange(int(round(seconds * sample_rate)), dtype=torch.float64) / sample_rate
    return (0.5 * torch.sin(2 * math.pi * freq * t)).float().expand(channels, -1).clone()


def config(root: Path, **overrides) -> DataConfig:
    """Everything in the training split unless a test asks otherwise."""
    base = dict(root=str(root), sample_rate=16000, segment_seconds=0.5, valid_fraction=0.0,
                gain_db=(), seed=0)
    return DataConfig(**{**base, **overrides})


@pytest.fixture
def speech_folder(tmp_path, speech_clips) -> Path:
    """The real speech clips, one in a subfolder and one as FLAC, to exercise the recursive scan."""
    folder = tmp_path / "speech"
    for n, clip in enumerate(speech_clips):
        wav, sr = load_audio(clip)
        name = ["a.wav", "sub/b.flac", "c.wav"][n]
        write(folder / name, wav, sr)
    return folder


# ------------------------------------------------------------------- crops

@pytest.mark.parametrize("split", ["train", "valid"])
def test_crops_have_the_segment_length(speech_folder, split):
    cfg = config(speech_folder, valid_fraction=1.0 if split == "valid" else 0.0)
    ds = AudioDataset(cfg, split)
    assert len(ds.clips) == 3
    # each clip gives floor(length / segment) items: clips are 4.85, 4.75 and 3.91 s long
    assert len(ds) == sum(c.frames // 8000 for c in ds.clips) == 9 + 9 + 7
    for i in range(len(ds)):
        item = ds[i]
        assert item.shape == (1, 8000) and item.dtype == torch.float32


def test_valid_crops_are_consecutive_segments_without_gain(speech_folder):
    ds = AudioDataset(config(speech_folder, valid_fraction=1.0, gain_db=(-6.0, 6.0)), "valid")
    whole, _ = load_audio(ds.clips[0].path)
    assert torch.equal(ds[0], whole[:, :8000]) and torch.equal(ds[1], whole[:, 8000:16000])


def test_train_crop_is_a_window_of_the_file(speech_folder):
    ds = AudioDataset(config(speech_folder))
    whole, _ = load_audio(ds.clips[0].path)
    crop = ds[0][0]
    starts = torch.nonzero(whole[0, :-7999] == crop[0]).flatten().tolist()
    assert any(torch.equal(whole[0, s:s + 8000], crop) for s in starts)


def test_gain_stays_in_range(tmp_path):
    write(tmp_path / "dc.wav", torch.full((1, 16000), 0.5), 16000)
    ds = AudioDataset(config(tmp_path, gain_db=(-12.0, -3.0), segment_seconds=0.25))
    gains_db = []
    for epoch in range(5):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert torch.allclose(item, item[0, 0].expand_as(item))
            gains_db.append(20 * math.log10(item[0, 0].item() / 0.5))
    assert min(gains_db) >= -12.0 - 1e-4 and max(gains_db) <= -3.0 + 1e-4
    assert max(gains_db) - min(gains_db) > 3.0  # not one fixed gain


def dominant_frequency(wav: torch.Tensor, sample_rate: int) -> float:
    spectrum = torch.fft.rfft(wav.double().flatten() * torch.hann_window(wav.shape[-1], dtype=torch.float64)).abs()
    return float(spectrum.argmax()) * sample_rate / wav.shape[-1]


@pytest.mark.parametrize("factor", [0.9, 1.1, 1.25])
def test_speed_change_scales_frequency_and_length(factor):
    wav = sine(440, 16000, 1.0)
    out = change_speed(wav, factor)
    assert out.shape[-1] == math.ceil(16000 / factor)
    assert dominant_frequency(out, 16000) == pytest.approx(440 * factor, abs=2.0)


def test_speed_perturbed_crops_are_full_length_and_move_the_pitch(tmp_path):
    write(tmp_path / "tone.wav", sine(400, 16000, 3.0), 16000)
    ds = AudioDataset(config(tmp_path, speed=(0.8, 1.25), segment_seconds=0.5))
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert item.shape == (1, 8000)
            freq = dominant_frequency(item, 16000)
            assert min(abs(freq - 320), abs(freq - 500)) < 4.0, freq
            seen.add(round(freq / 100))
    assert seen == {3, 5}  # both factors drawn


def test_a_factor_that_is_not_a_small_fraction_still_fills_the_crop(tmp_path):
    write(tmp_path / "dc.wav", torch.full((1, 48000), 0.5), 16000)
    ds = AudioDataset(config(tmp_path, speed=(1.333,), segment_seconds=0.5))
    for i in range(len(ds)):
        assert ds[i][0, -100:].abs().min() > 0.3       # no zero padding at the end


@pytest.mark.parametrize("factor", [0.7, 0.95, 1.1, 1.333])
def test_speed_changed_crops_do_not_ring_at_their_ends(tmp_path, factor):
    """A crop inside a clip is the clip played at the new speed, its first and last samples too.

    Reference: three tones evaluated at the source times the crop's samples stand for (start +
    i * p / q); resampling the bare window alone (zeros past its ends) missed by 0.007 to 0.07 there.
    """
    import numpy as np
    from codec.data import speed_ratio
    sr, seconds = 16000, 3.0
    tones = [(523.0, 0.2, 0.3), (1187.0, 0.15, 1.1), (2011.0, 0.1, 2.0)]     # Hz, amplitude, phase

    def signal(t):
        return sum(a * torch.sin(2 * math.pi * f * t + ph) for f, a, ph in tones)
    write(tmp_path / "tones.wav", signal(torch.arange(int(sr * seconds), dtype=torch.float64) / sr).float()[None], sr)
    ds = AudioDataset(config(tmp_path, speed=(factor,), segment_seconds=0.5))
    ratio = speed_ratio(factor)
    need = -(-8000 * ratio.numerator // ratio.denominator)
    checked = 0
    for i in range(len(ds)):
        rng = np.random.default_rng([0, 0, i])          # the draws __getitem__ makes: speed, then start
        rng.choice((factor,))
        start = int(rng.integers(0, 48000 - need + 1))
        if start < 32 or start + need + 32 > 48000:
            continue                         # the margin is cut short at the clip's ends
        t = (start + torch.arange(8000, dtype=torch.float64) * ratio.numerator / ratio.denominator) / sr
        torch.testing.assert_close(ds[i][0].double(), signal(t), rtol=0, atol=1e-3)   # measured: 2e-4
        checked += 1
    assert checked >= 3


def test_default_crops_are_the_seeded_window_and_gain(tmp_path):
    """With speed and eq off, a crop is exactly the draw (start, gain) of default_rng([seed, epoch, index])."""
    import numpy as np
    wav = torch.randn(1, 40000) * 0.1
    write(tmp_path / "noise.wav", wav, 16000)
    ds = AudioDataset(config(tmp_path, gain_db=(-6.0, 0.0), seed=3))
    ds.set_epoch(2)
    for i in range(len(ds)):
        rng = np.random.default_rng([3, 2, i])
        start = int(rng.integers(0, 40000 - 8000 + 1))
        gain = 10.0 ** (rng.uniform(-6.0, 0.0) / 20.0)
        torch.testing.assert_close(ds[i], wav[:, start:start + 8000] * gain, rtol=0, atol=0)


def test_speed_leaves_validation_untouched(speech_folder):
    plain = AudioDataset(config(speech_folder, valid_fraction=1.0), "valid")
    fast = AudioDataset(config(speech_folder, valid_fraction=1.0, speed=(1.2,)), "valid")
    assert torch.equal(items(plain), items(fast))


def test_speed_crops_are_reproducible_and_differ_from_plain(speech_folder):
    cfg = config(speech_folder, speed=(0.9, 1.1))
    assert torch.equal(items(AudioDataset(cfg)), items(AudioDataset(cfg)))
    assert not torch.equal(items(AudioDataset(cfg)), items(AudioDataset(config(speech_folder))))


@pytest.mark.parametrize("gain_db", [6.0, -9.0])
def test_peaking_eq_has_its_gain_at_the_centre_and_unity_far_away(gain_db):
    def steady_gain(freq):
        tone = sine(freq, 16000, 1.0).double()
        out = peaking_eq(tone, 16000, 1000.0, gain_db)
        return float(out[:, 8000:].pow(2).mean().sqrt() / tone[:, 8000:].pow(2).mean().sqrt())
    assert 20 * math.log10(steady_gain(1000.0)) == pytest.approx(gain_db, abs=0.05)
    assert abs(20 * math.log10(steady_gain(7000.0))) < 0.5
    assert abs(20 * math.log10(steady_gain(60.0))) < 0.5


def test_eq_crops_change_level_within_the_gain_range(tmp_path):
    write(tmp_path / "tone.wav", sine(1000, 16000, 3.0), 16000)
    plain = AudioDataset(config(tmp_path))
    eq = AudioDataset(config(tmp_path, eq_db=6.0))
    ratios = []
    for epoch in range(6):
        plain.set_epoch(epoch), eq.set_epoch(epoch)
        for i in range(len(eq)):
            ref, out = plain[i][:, 4000:], eq[i][:, 4000:]    # crop starts agree: eq draws after them
            ratios.append(20 * math.log10(float(out.pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())))
    assert all(-6.05 <= r <= 6.05 for r in ratios)
    assert max(ratios) - min(ratios) > 1.0   # not one fixed filter


@pytest.mark.parametrize("eq_db", [-1.0, 30.0, "loud", True])
def test_bad_eq_gain_is_an_error(tmp_path, eq_db):
    with pytest.raises(DatasetError, match="data.eq_db"):
        config(tmp_path, eq_db=eq_db)


@pytest.mark.parametrize("speed", [(0.3,), (1.0, 2.5), ("fast",), (True,), 1.1])
def test_bad_speed_factors_are_an_error(tmp_path, speed):
    with pytest.raises(DatasetError, match="data.speed"):
        config(tmp_path, speed=speed)


# -------------------------------------------------------------- short clips

def short_and_long(folder: Path) -> Path:
    write(folder / "short.wav", sine(440, 16000, 0.2), 16000)
    write(folder / "long.wav", sine(440, 16000, 1.0), 16000)
    return folder


def test_short_clips_are_zero_padded(tmp_path):
    ds = AudioDataset(config(short_and_long(tmp_path), pad_short=True, valid_fraction=1.0), "valid")
    assert len(ds) == 1 + 2
    number = [c.path.name for c in ds.clips].index("short.wav")
    item = ds[next(i for i in range(len(ds)) if ds.locate(i) == (number, 0))]
    assert item.shape == (1, 8000)
    assert torch.equal(item[:, :3200], sine(440, 16000, 0.2)) and not item[:, 3200:].any()


def test_short_clips_are_skipped(tmp_path):
    ds = AudioDataset(config(short_and_long(tmp_path), pad_short=False))
    assert [c.path.name for c in ds.clips] == ["long.wav"] and len(ds) == 2


def test_only_short_clips_and_no_padding_is_an_error(tmp_path):
    write(tmp_path / "short.wav", sine(440, 16000, 0.2), 16000)
    with pytest.raises(DatasetError, match="shorter than 0.5 s and pad_short is off"):
        AudioDataset(config(tmp_path, pad_short=False))


# ----------------------------------------------------------- reproducibility

def items(ds: AudioDataset) -> torch.Tensor:
    return torch.stack([ds[i] for i in range(len(ds))])


def test_same_seed_and_epoch_give_the_same_crops(speech_folder):
    cfg = config(speech_folder, gain_db=(-6.0, 0.0), segment_seconds=0.3)
    a, b = AudioDataset(cfg), AudioDataset(cfg)
    assert torch.equal(items(a), items(b))
    b.set_epoch(1)
    assert not torch.equal(items(a), items(b))
    a.set_epoch(1)
    assert torch.equal(items(a), items(b))
    c = AudioDataset(config(speech_folder, gain_db=(-6.0, 0.0), segment_seconds=0.3, seed=1))
    assert not torch.equal(items(a), items(c))


def test_crops_do_not_depend_on_order_or_worker(speech_folder):
    ds = AudioDataset(config(speech_folder, gain_db=(-6.0, 0.0)))
    expected = items(ds)
    fresh = AudioDataset(ds.config)
    assert torch.equal(torch.stack([fresh[i] for i in reversed(range(len(fresh)))]), expected.flip(0))
    loader = DataLoader(AudioDataset(ds.config), batch_size=4, num_workers=2)
    assert torch.equal(torch.cat(list(loader)), expected)


def test_cached_and_windowed_reads_agree(tmp_path, speech_wav):
    wav, _ = load_audio(speech_wav)
    write(tmp_path / "speech44k.wav", resample(wav, 16000, 44100), 44100)
    cached = AudioDataset(config(tmp_path, cache=True, gain_db=(-3.0, 0.0)))
    windowed = AudioDataset(config(tmp_path, cache=False, gain_db=(-3.0, 0.0)))
    assert torch.allclose(items(cached), items(windowed), atol=1e-5)


# ------------------------------------------------------------------- splits

def test_hash_splits_are_disjoint_and_cover_every_file(tmp_path):
    for n in range(60):
        write(tmp_path / f"d{n % 3}" / f"clip{n}.wav", torch.zeros(1, 400), 16000)
    cfg = config(tmp_path, valid_fraction=0.2, test_fraction=0.1, segment_seconds=0.01)
    train, valid, test = ({c.path for c in AudioDataset(cfg, s).clips} for s in ("train", "valid", "test"))
    assert train and valid and test
    assert not (train & valid) and not (train & test) and not (valid & test)
    assert len(train | valid | test) == 60
    again = {c.path for c in make_datasets(cfg)[1].clips}
    assert again == valid


def test_manifest_split_column_decides(tmp_path):
    rows = []
    for n, split in enumerate(["train", "train", "valid", "test"]):
        write(tmp_path / "audio" / f"{n}.wav", torch.zeros(1, 1600), 16000)
        rows.append({"path": f"audio/{n}.wav", "kind": "speech", "synthetic": "0", "split": split})
    write(tmp_path / "audio" / "not-listed.wav", torch.zeros(1, 1600), 16000)
    with open(tmp_path / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for root in (tmp_path, tmp_path / "manifest.csv"):  # the folder is read through its manifest
        cfg = config(root, valid_fraction=0.5)
        assert [c.path.name for c in AudioDataset(cfg, "train").clips] == ["0.wav", "1.wav"]
        assert [c.path.name for c in AudioDataset(cfg, "valid").clips] == ["2.wav"]
        assert [c.path.name for c in AudioDataset(cfg, "test").clips] == ["3.wav"]


def test_manifest_filters_kind_and_synthetic(tmp_path):
    table = [("s.wav", "speech", "0"), ("m.wav", "music", "0"), ("t.wav", "speech", "1")]
    for name, _, _ in table:
        write(tmp_path / name, torch.zeros(1, 1600), 16000)
    (tmp_path / "manifest.csv").write_text(
        "path,kind,synthetic,split\n" + "".join(f"{n},{k},{s},train\n" for n, k, s in table))

    def names(**overrides) -> list[str]:
        return sorted(c.path.name for c in AudioDataset(config(tmp_path, **overrides)).clips)

    assert names() == ["m.wav", "s.wav", "t.wav"]
    assert names(kinds=("speech",)) == ["s.wav", "t.wav"]
    assert names(kinds=["speech"], synthetic=False) == ["s.wav"]


def test_stable_split_is_fixed_and_has_the_asked_fractions():
    assert stable_split("vm-goodbye", 0.03, 0.05) == stable_split("vm-goodbye", 0.03, 0.05)
    splits = [stable_split(f"prompt-{n}", 0.03, 0.05) for n in range(20000)]
    assert abs(splits.count("test") / 20000 - 0.05) < 0.006
    assert abs(splits.count("valid") / 20000 - 0.03) < 0.005
    # a larger test fraction only adds test keys: a test prompt never comes back to training
    assert all(stable_split(f"prompt-{n}", 0.03, 0.10) == "test"
               for n, s in enumerate(splits) if s == "test")


# ------------------------------------------------------- channels and rates

def test_stereo_is_downmixed_or_one_channel_is_kept(tmp_path):
    left = sine(440, 16000, 0.5)
    write(tmp_path / "st.wav", torch.cat([left, -0.5 * left]), 16000)
    mono = AudioDataset(config(tmp_path, valid_fraction=1.0), "valid")[0]
    assert torch.allclose(mono, 0.25 * left, atol=1e-6)
    right = AudioDataset(config(tmp_path, valid_fraction=1.0, channel=1), "valid")[0]
    assert torch.allclose(right, -0.5 * left, atol=1e-6)


def test_44k_file_is_resampled_to_16k(tmp_path):
    write(tmp_path / "tone.wav", sine(1000, 44100, 1.0, channels=2), 44100)
    ds = AudioDataset(config(tmp_path, valid_fraction=1.0), "valid")
    assert ds.clips[0].frames == 16000 and len(ds) == 2
    crop = ds[0][0]
    assert crop.shape == (8000,)
    spectrum = torch.fft.rfft(crop * torch.hann_window(8000)).abs()
    assert float(spectrum.argmax()) * 16000 / 8000 == 1000.0
    assert torch.allclose(crop[200:-200], sine(1000, 16000, 0.5)[0, 200:-200], atol=2e-3)


# ------------------------------------------------------------------- errors

def test_empty_folder(tmp_path):
    with pytest.raises(DatasetError, match="no audio files found under"):
        AudioDataset(config(tmp_path))
    (tmp_path / "readme.txt").write_text("no audio here")
    (tmp_path / ".hidden.wav.tmp.wav").write_bytes(b"")  # a temporary of an interrupted save
    with pytest.raises(DatasetError, match="no audio files found under"):
        AudioDataset(config(tmp_path))


def test_missing_root_and_empty_split(tmp_path):
    with pytest.raises(DatasetError, match="no such dataset folder or manifest"):
        AudioDataset(config(tmp_path / "nope"))
    write(tmp_path / "a.wav", torch.zeros(1, 100), 16000)
    with pytest.raises(DatasetError, match="no audio files in split 'valid'"):
        AudioDataset(config(tmp_path, valid_fraction=0.0), "valid")
    with pytest.raises(DatasetError, match="split must be one of"):
        AudioDataset(config(tmp_path), "dev")


def test_manifest_without_a_path_column(tmp_path):
    (tmp_path / "manifest.csv").write_text("file,split\na.wav,train\n")
    with pytest.raises(DatasetError, match="has no 'path' column"):
        AudioDataset(config(tmp_path))


def test_unreadable_file_is_named(tmp_path):
    (tmp_path / "broken.flac").write_bytes(b"not flac at all")
    with pytest.raises(ValueError, match="broken.flac"):
        AudioDataset(config(tmp_path))


# ------------------------------------------------------------ corpus builder

def voice_jobs(mc, tmp_path: Path, lang: str, voice: str, prompts: list[str]) -> dict[str, str]:
    """package_jobs over an unpacked Asterisk voice package of empty prompt files: {prompt: split}."""
    package = f"asterisk-core-sounds-{lang}-g722"
    root = tmp_path / package
    for prompt in prompts:
        path = root / "usr/share/asterisk/sounds" / voice / f"{prompt}.g722"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return {Path(j.output).relative_to(f"speech16k/{lang}").with_suffix("").as_posix(): j.split
            for j in mc.package_jobs(package, root)}


def test_corpus_prompts_share_a_split_across_languages(tmp_path, mc):
    prompts = [f"vm-prompt{n}" for n in range(40)] + ["digits/1", "letters/a", "silence/1"]
    jobs = {lang: voice_jobs(mc, tmp_path, lang, voice, prompts)
            for lang, voice in [("en", "en_US_f_Allison"), ("fr", "fr_CA_f_June")]}
    assert jobs["en"] == jobs["fr"]
    assert "silence/1" not in jobs["en"] and "digits/1" in jobs["en"]
    assert {"train", "test"} <= set(jobs["en"].values())


def test_corpus_heldout_voices_keep_only_unseen_prompts(tmp_path, mc):
    prompts = [f"vm-prompt{n}" for n in range(200)]
    splits = {lang: voice_jobs(mc, tmp_path, lang, voice, prompts)
              for lang, voice in [("en", "en_US_f_Allison"), ("it", "it_IT_m_Carlo")]}
    test_prompts = {p for p, split in splits["en"].items() if split == "test"}
    assert test_prompts and len(splits["en"]) == len(prompts)
    assert set(splits["it"]) == test_prompts                # the training voice's test prompts only
    assert set(splits["it"].values()) == {mc.HELDOUT_SPLIT}  # never "train" or "valid"


def test_corpus_heldout_voices_are_opt_in(mc):
    assert mc.parse_args([]).packages == mc.TRAINING_PACKAGES
    assert not any(mc.PACKAGES[p].heldout for p in mc.TRAINING_PACKAGES)
    assert {"asterisk-core-sounds-it-g722", "asterisk-core-sounds-ru-g722"} == set(mc.HELDOUT_PACKAGES)
    assert "asterisk-core-sounds-fr-g722" in mc.TRAINING_PACKAGES


def test_corpus_holds_out_whole_music_tracks(mc):
    splits = mc.ranked_splits([f"track{n}" for n in range(1, 32)])
    assert sorted(splits.values()).count("test") == 2 and list(splits.values()).count("valid") == 1
    assert splits == mc.ranked_splits([f"track{n}" for n in reversed(range(1, 32))])


def test_corpus_tool_reports_a_missing_tool(tmp_path, monkeypatch, capsys, mc):
    monkeypatch.setenv("PATH", str(tmp_path))  # no apt-get, dpkg-deb or ffmpeg
    assert mc.main(["--out", str(tmp_path / "corpus"), "--packages", "drascula-music", "--quiet"]) == 1
    assert "'apt-get' was not found on PATH" in capsys.readouterr().err


def test_manifest_language_filter(tmp_path):
    import soundfile as sf
    import numpy as np
    from codec.data import DataConfig, list_clips
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "manifest.csv").write_text("path,kind,language,split\na.wav,speech,en,train\nb.wav,speech,fr,train\n")
    clips = list_clips(DataConfig(root=str(tmp_path), languages=("en",)), "train")
    assert [c.path.name for c in clips] == ["a.wav"]


def test_manifest_heldout_rows_are_in_no_split(tmp_path):
    import soundfile as sf
    import numpy as np
    from codec.data import DataConfig, list_clips
    for name in ("a", "b"):
        sf.write(tmp_path / f"{name}.wav", np.zeros(1600, dtype=np.float32), 16000)
    (tmp_path / "manifest.csv").write_text("path,kind,language,split\na.wav,speech,en,train\nb.wav,speech,it,heldout\n")
    assert [c.path.name for c in list_clips(DataConfig(root=str(tmp_path)), "train")] == ["a.wav"]
    for split in ("valid", "test"):
        with pytest.raises(DatasetError, match=f"no audio files in split '{split}'"):
            list_clips(DataConfig(root=str(tmp_path)), split)


# --------------------------------------------------------- speakers and draws

SPEAKER_ROWS = [  # path, package, speaker, synthetic, seconds, split
    ("a0.wav", "pkg-a", "anna", "0", 2.0, "train"), ("a1.wav", "pkg-a", "anna", "0", 2.0, "train"),
    ("a2.wav", "pkg-a", "anna", "0", 2.0, "train"), ("b0.wav", "pkg-b", "boris", "0", 0.5, "train"),
    ("s0.wav", "espeak-ng", "espeak_en", "1", 1.0, "train"), ("h0.wav", "pkg-b", "hana", "0", 1.0,
                                                              "heldout_speaker")]


def speaker_manifest(root: Path, rows=SPEAKER_ROWS, columns=("path", "package", "speaker", "synthetic",
                                                             "split")) -> Path:
    """A manifest over silent clips; items of 0.5 s: anna 3 x 4, boris 1, espeak_en 2."""
    for path, _, _, _, seconds, _ in rows:
        write(root / path, torch.zeros(1, int(seconds * 16000)), 16000)
    fields = dict(zip(("path", "package", "speaker", "synthetic", "seconds", "split"), range(6)))
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([[row[fields[c]] for c in columns] for row in rows])
    return root


def drawn_shares(ds: AudioDataset, draws: int = 10_000) -> dict[str, float]:
    """Each speaker's share of ``draws`` items drawn by the trainer (one seeded step of that batch)."""
    from codec.trainer import batch_indices
    picks = batch_indices(7, 3, len(ds), draws, 0, 1, ds.sampling_weights)
    speakers = [ds.clips[ds.locate(i)[0]].speaker for i in picks]
    return {s: speakers.count(s) / draws for s in sorted(set(speakers))}


def assert_shares(got: dict[str, float], want: dict[str, float], tolerance: float = 0.02) -> None:
    """Within 2 percentage points: 10,000 draws have a standard error of at most 0.5 points."""
    assert set(got) == {s for s, p in want.items() if p > 0}
    for speaker, share in want.items():
        assert abs(got.get(speaker, 0.0) - share) < tolerance, (speaker, got, want)


def test_default_draws_are_todays_uniform_items(tmp_path):
    from codec.trainer import batch_indices
    ds = AudioDataset(config(speaker_manifest(tmp_path)))
    assert ds.sampling_weights is None
    g = torch.Generator().manual_seed(5 * 1_000_003 + 9)
    assert batch_indices(5, 9, len(ds), 16, 0, 1, ds.sampling_weights) == \
        torch.randint(0, len(ds), (16,), generator=g).tolist()
    assert_shares(drawn_shares(ds), {"anna": 12 / 15, "boris": 1 / 15, "espeak_en": 2 / 15})


def test_speaker_sampling_gives_every_speaker_an_equal_share(tmp_path):
    ds = AudioDataset(config(speaker_manifest(tmp_path), sampling="speaker"))
    assert float(ds.sampling_weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert_shares(drawn_shares(ds), {"anna": 1 / 3, "boris": 1 / 3, "espeak_en": 1 / 3})


def test_weights_scale_a_speaker_or_a_package(tmp_path):
    root = speaker_manifest(tmp_path)
    ds = AudioDataset(config(root, sampling="speaker", weights={"anna": 2.0}))
    assert_shares(drawn_shares(ds), {"anna": 0.5, "boris": 0.25, "espeak_en": 0.25})
    ds = AudioDataset(config(root, weights={"pkg-b": 0.0, "espeak_en": 6.0}))  # by items: 12, 0, 2 x 6
    assert_shares(drawn_shares(ds), {"anna": 0.5, "boris": 0.0, "espeak_en": 0.5})


def test_synthetic_share_is_capped(tmp_path):
    ds = AudioDataset(config(speaker_manifest(tmp_path), max_synthetic_share=0.05))  # would be 2/15
    assert_shares(drawn_shares(ds), {"anna": 0.95 * 12 / 13, "boris": 0.95 / 13, "espeak_en": 0.05})
    assert_shares(drawn_shares(AudioDataset(config(tmp_path, max_synthetic_share=0.0))),
                  {"anna": 12 / 13, "boris": 1 / 13, "espeak_en": 0.0})


def test_a_cap_with_only_synthetic_clips_is_an_error(tmp_path):
    speaker_manifest(tmp_path, [("s0.wav", "espeak-ng", "espeak_en", "1", 1.0, "train")])
    with pytest.raises(DatasetError, match="every training clip drawn is synthetic"):
        AudioDataset(config(tmp_path, max_synthetic_share=0.15))


def test_manifest_filters_speakers_and_sources(tmp_path):
    root = speaker_manifest(tmp_path)

    def names(**overrides) -> list[str]:
        return sorted(c.path.name for c in AudioDataset(config(root, **overrides)).clips)

    assert names(speakers=("boris", "espeak_en")) == ["b0.wav", "s0.wav"]
    assert names(sources=["pkg-a"]) == ["a0.wav", "a1.wav", "a2.wav"]
    assert names(sources=("pkg-b",)) == ["b0.wav"]                 # h0.wav is held out
    with pytest.raises(DatasetError, match="no audio files in split 'train'"):
        names(sources=("pkg-b",), speakers=("anna",))


def test_held_out_speakers_are_a_split_of_their_own(tmp_path):
    from codec.data import list_clips
    root = speaker_manifest(tmp_path)
    assert "hana" not in {c.speaker for c in AudioDataset(config(root), "train").clips}
    assert [c.path.name for c in list_clips(config(root), "heldout_speaker")] == ["h0.wav"]
    with pytest.raises(DatasetError, match="split must be one of"):
        list_clips(config(root), "holdout")


def test_old_manifest_without_speakers_loads_one_speaker_per_package(tmp_path):
    root = speaker_manifest(tmp_path, columns=("path", "package", "synthetic", "split"))
    ds = AudioDataset(config(root, sampling="speaker"))
    assert {c.path.name: c.speaker for c in ds.clips} == {"a0.wav": "pkg-a", "a1.wav": "pkg-a", "a2.wav": "pkg-a",
                                                         "b0.wav": "pkg-b", "s0.wav": "espeak-ng"}
    assert_shares(drawn_shares(ds), {"pkg-a": 1 / 3, "pkg-b": 1 / 3, "espeak-ng": 1 / 3})


@pytest.mark.parametrize("field, value, message", [
    ("sampling", "voice", "data.sampling must be one of"),
    ("weights", {"anna": -1.0}, "data.weights must be a table"),
    ("weights", {"anna": True}, "data.weights must be a table"),
    ("max_synthetic_share", 1.5, "data.max_synthetic_share must be a number from 0 to 1")])
def test_bad_draw_settings_are_errors(field, value, message):
    with pytest.raises(DatasetError, match=message):
        DataConfig(**{field: value})
