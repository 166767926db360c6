"""tools/make_corpus.py: the source listers, speakers and splits, the silence trimmer and level
normaliser, and a small batched build; on fake unpacked packages of tiny files, no downloads."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from codec.data import AudioDataset, DataConfig, list_clips

ROOT = Path(__file__).resolve().parents[1]
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")


def tone(seconds: float, rate: int = 16000, amplitude: float = 0.5, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def touch(path: Path, content: bytes | None = None) -> Path:
    """A tiny file whose bytes differ from every other one's (the listers drop repeated contents)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if content is not None else str(path).encode())
    return path


def ogg(path: Path, seconds: float = 0.3, rate: int = 22050, amplitude: float = 0.5,
        freq: float = 220.0) -> Path:
    """A real Ogg Vorbis file (the Tux Paint lister reads rates; a build decodes them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), tone(seconds, rate, amplitude, freq), rate, format="OGG", subtype="VORBIS")
    return path


def by_output(jobs) -> dict[str, object]:
    return {job.output: job for job in jobs}


# ------------------------------------------------------------------- listers

def test_festvox_ru_lists_the_wav_folder_as_one_man(tmp_path, mc):
    wavs = tmp_path / mc.FESTVOX_RU_WAVS
    for n in (1, 2, 3):
        touch(wavs / f"ru_{n:04d}.wav")
    touch(wavs.parent / "mcep" / "ru_0001.mcep")       # not audio
    jobs = mc.package_jobs("festvox-ru", tmp_path)
    assert sorted(by_output(jobs)) == [f"speech16k/festvox-ru/ru_000{n}.wav" for n in (1, 2, 3)]
    assert {(j.speaker, j.language, j.batched, j.trim) for j in jobs} == {("ru_nsh", "ru", True, False)}
    assert mc.speaker_sex("ru_nsh") == "m"


@pytest.mark.parametrize("stem, speaker", [
    ("1st-m-hej", "fillets_cs_small"), ("1st-v-ven", "fillets_cs_big"), ("m-bude", "fillets_cs_small"),
    ("agenti-m", "fillets_cs_small"), ("sp-shout_big_00", "fillets_cs_big"),
    ("k1-pap-kruci", "fillets_cs_minor"), ("b1-10", "fillets_cs_minor"), ("help3", "fillets_cs_minor")])
def test_fillets_speaker_comes_from_the_file_name(mc, stem, speaker):
    assert mc.fillets_speaker("cs", stem) == speaker


def test_fillets_lists_one_dub_and_drops_repeated_recordings(tmp_path, mc):
    sound = tmp_path / mc.FILLETS_SOUNDS
    touch(sound / "start/cs/1st-m-hej.ogg")
    touch(sound / "share/borejokes/cs/ob-o-halo.ogg")
    touch(sound / "cabin1/cs/k1-pap-kruci.ogg", b"parrot")
    touch(sound / "cabin2/cs/k1-pap-kruci.ogg", b"parrot")   # the same recording again
    touch(sound / "start/nl/1st-m-hej.ogg")                  # the other dub's package
    jobs = by_output(mc.package_jobs("fillets-ng-data-cs", tmp_path))
    assert sorted(jobs) == ["speech16k/fillets-ng-data-cs/cabin1/k1-pap-kruci.wav",
                            "speech16k/fillets-ng-data-cs/share/borejokes/ob-o-halo.wav",
                            "speech16k/fillets-ng-data-cs/start/1st-m-hej.wav"]
    assert [j.speaker for j in jobs.values()] == ["fillets_cs_minor", "fillets_cs_minor", "fillets_cs_small"]
    assert [j.split for j in jobs.values()][:2] == [mc.HELDOUT_SPEAKER_SPLIT] * 2
    assert all(j.trim and j.language == "cs" for j in jobs.values())


def test_tuxpaint_lists_descriptions_by_language(tmp_path, mc):
    stamps = tmp_path / mc.TUXPAINT_STAMPS
    ogg(stamps / "animals/birds/bee_desc_bg.ogg", freq=200)
    ogg(stamps / "animals/birds/bee_desc.ogg", freq=210)              # no language: English
    ogg(stamps / "town/inukshuk_desc_da.ogg.ogg", freq=220)           # a doubled suffix in the package
    ogg(stamps / "animals/birds/bee.ogg", freq=230)                   # a sound effect, not a description
    ogg(stamps / "animals/pigeon_desc_ca.ogg", rate=8000, freq=240)   # narrowband: left out
    jobs = by_output(mc.package_jobs("tuxpaint-stamps-default", tmp_path))
    out = "speech16k/tuxpaint-stamps-default"
    assert sorted(jobs) == [f"{out}/animals/birds/bee_desc_bg.wav", f"{out}/animals/birds/bee_desc_en.wav",
                            f"{out}/town/inukshuk_desc_da.wav"]
    assert [(j.language, j.speaker) for j in jobs.values()] == [("bg", "tux_bg"), ("en", "tux_en"),
                                                                 ("da", "tux_da")]
    # a stamp's descriptions are one prompt: the same split in every language (unless held out)
    assert jobs[f"{out}/animals/birds/bee_desc_bg.wav"].split == jobs[f"{out}/animals/birds/bee_desc_en.wav"].split


def test_klettres_speakers_languages_and_trimming(tmp_path, mc):
    sounds = tmp_path / mc.KLETTRES_SOUNDS
    for rel in ("de/alpha/a.ogg", "de/syllab/ba.ogg", "pt_BR/syllab/ba.ogg", "hu/alpha/a.ogg", "ar/alpha/a.ogg"):
        touch(sounds / rel)
    touch(sounds / "de/sounds.xml")
    jobs = {j.output.split("klettres-data/")[1]: j for j in mc.package_jobs("klettres-data", tmp_path)}
    assert {k: (j.language, j.speaker) for k, j in jobs.items()} == {
        "ar/alpha/a.wav": ("ar", "kl_ar_rafik"), "de/alpha/a.wav": ("de", "kl_de_alpha"),
        "de/syllab/ba.wav": ("de", "kl_de_syllab"), "hu/alpha/a.wav": ("hu", "kl_hu"),
        "pt_BR/syllab/ba.wav": ("pt", "kl_ptbr_michelle")}
    assert all(j.trim for j in jobs.values())
    assert mc.speaker_sex("kl_ar_rafik") == "child" and mc.speaker_sex("kl_de_syllab") == "m"


def test_gcin_names_its_two_voices_and_writes_ascii_paths(tmp_path, mc):
    voices = tmp_path / mc.GCIN_SOUNDS
    for voice in ("3", "5"):
        touch(voices / "ㄅㄚ1" / f"{voice}.ogg")
    jobs = mc.package_jobs("gcin-voice", tmp_path)
    assert sorted((j.output, j.speaker) for j in jobs) == [
        ("speech16k/gcin-voice/gcin_f/u3105u311a1.wav", "gcin_f"),
        ("speech16k/gcin-voice/gcin_m/u3105u311a1.wav", "gcin_m")]
    assert jobs[0].split == jobs[1].split                   # one syllable, one prompt
    assert mc.speaker_sex("gcin_f") == "f" and mc.speaker_sex("gcin_m") == "m"
    assert all(j.output.isascii() for j in jobs)


def test_kajongg_voices_in_english_and_german(tmp_path, mc):
    voices = tmp_path / mc.KAJONGG_VOICES
    touch(voices / "male1/chow.ogg")
    touch(voices / "de/female2/chow.ogg")
    touch(voices / "male1/COPYRIGHT")
    jobs = by_output(mc.package_jobs("kajongg", tmp_path))
    assert {k: (j.language, j.speaker) for k, j in jobs.items()} == {
        "speech16k/kajongg/en/male1/chow.wav": ("en", "kaj_en_male1"),
        "speech16k/kajongg/de/female2/chow.wav": ("de", "kaj_de_female2")}
    assert mc.speaker_sex("kaj_de_female2") == "f" and mc.speaker_sex("kaj_en_male1") == "m"


def test_a_package_without_its_audio_is_an_error(tmp_path, mc):
    with pytest.raises(mc.CorpusError, match="no audio files of kajongg"):
        mc.package_jobs("kajongg", tmp_path)


def test_asterisk_voices_keep_their_outputs_and_get_a_speaker(tmp_path, mc):
    voice = tmp_path / "usr/share/asterisk/sounds/en_US_f_Allison"
    touch(voice / "vm-goodbye.g722")
    touch(voice / "digits/1.g722")
    jobs = by_output(mc.package_jobs("asterisk-core-sounds-en-g722", tmp_path))
    assert sorted(jobs) == ["speech16k/en/digits/1.wav", "speech16k/en/vm-goodbye.wav"]
    assert [j.split for j in jobs.values()] == [mc.prompt_split("vm-goodbye"), mc.prompt_split("digits/1")]
    assert {(j.speaker, j.batched) for j in jobs.values()} == {("ast_en", False)}
    assert mc.speaker_sex("ast_en") == "f"


# ------------------------------------------------------------- speakers, splits

def test_speaker_table_is_complete_for_the_held_out_people(mc):
    sexes = {mc.speaker_sex(s) for s in mc.HELDOUT_SPEAKERS}
    assert len(mc.HELDOUT_SPEAKERS) >= 4 and {"m", "f", "child"} <= sexes
    assert all(entry.sex in ("m", "f", "child", "") for entry in mc.SPEAKERS.values())


def test_held_out_speakers_are_whole_and_prompts_never_cross_splits(tmp_path, mc):
    stamps = tmp_path / mc.TUXPAINT_STAMPS
    for n in range(40):
        for k, lang in enumerate(("bg", "da", "el", "es")):   # tux_da and tux_el are held out
            ogg(stamps / f"things/thing{n}_desc_{lang}.ogg", seconds=0.05, freq=100 + 4 * n + k)
    jobs = mc.package_jobs("tuxpaint-stamps-default", tmp_path)
    assert {j.split for j in jobs if j.speaker in ("tux_da", "tux_el")} == {mc.HELDOUT_SPEAKER_SPLIT}
    assert all(j.split != mc.HELDOUT_SPEAKER_SPLIT for j in jobs if j.speaker in ("tux_bg", "tux_es"))
    split_of: dict[str, set[str]] = {}
    for job in jobs:
        if job.split != mc.HELDOUT_SPEAKER_SPLIT:
            split_of.setdefault(Path(job.output).name.split("_desc")[0], set()).add(job.split)
    assert all(len(splits) == 1 for splits in split_of.values())
    assert {"train", "test"} <= set().union(*split_of.values())


def test_old_manifest_rows_get_empty_speaker_columns(tmp_path, mc):
    (tmp_path / "manifest.csv").write_text("path,package,kind,language,duration_s,synthetic,split\n"
                                           "a.wav,drascula-music,music,,1.000,0,train\n")
    rows = mc.read_manifest(tmp_path / "manifest.csv")
    assert rows == [{"path": "a.wav", "package": "drascula-music", "kind": "music", "language": "",
                     "duration_s": "1.000", "synthetic": "0", "split": "train", "speaker": "", "sex": ""}]


# ------------------------------------------------------------ trimmer, level

def test_trim_keeps_the_sound_and_a_margin_of_silence(mc, rng):
    rate = 16000
    noise = (1e-3 * rng.standard_normal(rate)).astype(np.float32)        # -60 dBFS floor
    wav = np.concatenate([noise, tone(0.5, rate) + noise[:8000], noise])  # 1 s, 0.5 s sound, 1 s
    start, end = mc.trim_bounds(wav, rate)
    margin = mc.TRIM_MARGIN_SECONDS * rate
    frame = mc.FRAME_SECONDS * rate
    assert abs(start - (rate - margin)) <= frame and abs(end - (1.5 * rate + margin)) <= frame


def test_trim_sees_a_high_noise_floor_as_silence(mc, rng):
    rate = 16000
    noise = (0.03 * rng.standard_normal(2 * rate)).astype(np.float32)   # -30 dBFS hiss, 25 dB under
    wav = noise.copy()
    wav[rate:rate + 4000] += tone(0.25, rate, amplitude=0.8)
    start, end = mc.trim_bounds(wav, rate)
    assert rate - 0.2 * rate <= start <= rate - 0.1 * rate and 1.25 * rate + 0.1 * rate <= end <= 1.25 * rate + 0.2 * rate


def test_trim_leaves_a_clip_without_silence_and_an_empty_one(mc):
    wav = tone(1.0)
    assert mc.trim_bounds(wav, 16000) == (0, 16000)
    assert mc.trim_bounds(np.zeros(0, dtype=np.float32), 16000) == (0, 0)


def test_level_gain_raises_only_very_quiet_clips(mc):
    quiet = tone(1.0, amplitude=10 ** (-50 / 20))                       # peak -50 dBFS, RMS -53
    gain = mc.level_gain(quiet, 16000)
    rms_db = 10 * np.log10(np.mean((quiet * gain) ** 2))
    assert abs(rms_db - mc.TARGET_DB) < 0.1
    assert mc.level_gain(tone(1.0, amplitude=0.1), 16000) == 1.0          # RMS -23 dBFS: left alone
    assert mc.level_gain(np.zeros(16000, dtype=np.float32), 16000) == 1.0


def test_level_gain_keeps_the_peak_under_the_limit(mc):
    wav = tone(1.0, amplitude=1e-3)
    wav[100] = 0.05                                                      # one click at -26 dBFS
    peak_db = 20 * np.log10(np.abs(wav * mc.level_gain(wav, 16000)).max())
    assert abs(peak_db - mc.PEAK_DB) < 0.01


# ----------------------------------------------------------------- a build

def fake_klettres(extracted: Path, mc) -> None:
    """Three languages of quiet, silence-padded letters: cs (a held-out woman), de and hu."""
    sounds = extracted / "klettres-data" / mc.KLETTRES_SOUNDS
    n = 0
    for lang in ("cs", "de", "hu"):
        for kind in ("alpha", "syllab"):
            for letter in "abcdef":
                n += 1
                path = sounds / lang / kind / f"{letter}.ogg"
                path.parent.mkdir(parents=True, exist_ok=True)
                wav = np.concatenate([np.zeros(22050, np.float32), tone(0.4, 22050, 10 ** (-45 / 20), 150 + 7 * n),
                                      np.zeros(22050, np.float32)])
                sf.write(str(path), wav, 22050, format="OGG", subtype="VORBIS")


@needs_ffmpeg
def test_build_trims_raises_tags_and_holds_out_speakers(tmp_path, mc):
    out = tmp_path / "corpus"
    fake_klettres(out / "extract", mc)
    rows = mc.build_corpus(out, ["klettres-data"], jobs=2, progress=False)
    assert len(rows) == 36
    with open(out / "manifest.csv", newline="") as f:
        manifest = list(csv.DictReader(f))
    assert tuple(manifest[0]) == mc.MANIFEST_COLUMNS
    for row in manifest:
        wav, rate = sf.read(str(out / row["path"]))
        assert rate == 16000 and wav.ndim == 1
        # was 2.4 s; a 20 ms frame each side, and Vorbis smears the tone's edges by a few ms
        assert 0.4 <= float(row["duration_s"]) <= 0.4 + 2 * (mc.TRIM_MARGIN_SECONDS + mc.FRAME_SECONDS) + 0.03
        assert 10 * np.log10(np.mean(wav ** 2)) > mc.QUIET_DB                          # was -48 dBFS
    speakers = {r["speaker"]: r["sex"] for r in manifest}
    assert speakers == {"kl_cs_eva": "f", "kl_de_alpha": "", "kl_de_syllab": "m", "kl_hu": "m"}
    held = [r for r in manifest if r["speaker"] == "kl_cs_eva"]
    assert {r["split"] for r in held} == {mc.HELDOUT_SPEAKER_SPLIT}
    with open(out / mc.HELDOUT_SPEAKERS_CSV, newline="") as f:
        assert list(csv.DictReader(f)) == held

    # a held-out speaker never reaches a training batch, however the draws are weighted
    from codec.trainer import batch_indices
    config = DataConfig(root=str(out), segment_seconds=0.2, sampling="speaker", weights={"kl_cs_eva": 5.0})
    train = AudioDataset(config, "train")
    drawn = {train.clips[train.locate(i)[0]].speaker
             for i in batch_indices(0, 0, len(train), 2000, 0, 1, train.sampling_weights)}
    assert "kl_cs_eva" not in drawn and drawn <= {"kl_de_alpha", "kl_de_syllab", "kl_hu"}
    assert {c.speaker for c in list_clips(config, "heldout_speaker")} == {"kl_cs_eva"}

    # a second run decodes nothing and rewrites nothing
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert mc.build_corpus(out, ["klettres-data"], jobs=2, progress=False) == rows
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


@needs_ffmpeg
def test_a_file_that_does_not_decode_is_named(tmp_path, mc):
    out = tmp_path / "corpus"
    fake_klettres(out / "extract", mc)
    broken = out / "extract/klettres-data" / mc.KLETTRES_SOUNDS / "de/alpha/b.ogg"
    broken.write_bytes(b"OggS but not really")
    with pytest.raises(mc.CorpusError, match="cannot decode .*de/alpha/b.ogg"):
        mc.build_corpus(out, ["klettres-data"], jobs=1, progress=False)
    assert not list(out.rglob(".*.tmp*"))            # no batch folder or half-written file is left


@needs_ffmpeg
def test_a_source_without_samples_gets_no_row_and_is_not_decoded_again(tmp_path, mc):
    out = tmp_path / "corpus"
    fake_klettres(out / "extract", mc)
    empty = out / "extract/klettres-data" / mc.KLETTRES_SOUNDS / "hu/alpha/z.ogg"
    sf.write(str(empty), np.zeros(0, np.float32), 22050, format="OGG", subtype="VORBIS")
    rows = mc.build_corpus(out, ["klettres-data"], jobs=1, progress=False)
    assert len(rows) == 36 and not any(r["path"].endswith("hu/alpha/z.wav") for r in rows)
    marker = mc.no_audio_marker(out / "speech16k/klettres-data/hu/alpha/z.wav")
    assert marker.is_file()
    jobs = mc.package_jobs("klettres-data", out / "extract/klettres-data")
    assert all(mc.is_done(job, out) for job in jobs)    # so a second run decodes nothing
