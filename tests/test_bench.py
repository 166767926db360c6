"""The bitrate-vs-quality benchmark: classic codec round trips, rates, caching, outputs, CLI."""
from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import codec
from codec import bench, classic, report
from codec.audio import load_audio
from codec.entropy import count_symbols
from tests.helpers import tiny_model

HAVE_OPUS = not classic.missing_tools(classic.OPUS_TOOLS)
HAVE_CODEC2 = not classic.missing_tools(classic.CODEC2_TOOLS)
needs_opus = pytest.mark.skipif(not HAVE_OPUS, reason="opusenc/opusdec not installed (Debian: opus-tools)")
needs_codec2 = pytest.mark.skipif(not HAVE_CODEC2, reason="c2enc/c2dec not installed (Debian: codec2)")
CLIP_SECONDS = 1.2


# ---------------------------------------------------------------------------- alignment
@pytest.mark.parametrize("true_lag", [37, -20, 0])
def test_measure_lag_finds_a_known_shift(speech_wav, true_lag):
    x, sr = sf.read(str(speech_wav), dtype="float64")
    late = classic.shift(x, -true_lag, len(x))           # late by true_lag samples (early if < 0)
    assert classic.measure_lag(x, late, max_lag=200) == true_lag
    assert abs(classic.measure_lag(x, late, max_lag=400, envelope_rate=sr) - true_lag) <= 8
    assert np.array_equal(classic.shift(late, true_lag, len(x))[200:-200], x[200:-200])


@needs_opus
@pytest.mark.parametrize("kbps", [6, 12])
def test_opus_output_has_zero_lag(speech_wav, kbps):
    x, sr = sf.read(str(speech_wav), dtype="float64")
    done = classic.opus_roundtrip(x, sr, kbps)
    assert done.audio.shape == x.shape
    # Measured afresh over +-50 ms: a pre-skip left in would show as 6.5 ms (104 samples).
    assert classic.measure_lag(x, done.audio, max_lag=int(0.05 * sr)) == 0
    assert done.residual_lag == 0
    assert abs(done.lag) <= 1                   # opusdec removed the pre-skip; what is left is sub-ms
    assert np.corrcoef(x, done.audio)[0, 1] > 0.8
    expected = kbps * 1000 * len(x) / sr / 8    # payload alone; the Ogg file adds headers and pages
    assert expected < done.num_bytes < 1.6 * expected


@needs_opus
def test_opus_delay_is_searched_within_a_pitch_period():
    assert classic.OPUS_MAX_LAG_S < 1 / 400     # a correlation peak one period away is out of reach
    sr = 16000
    t = np.arange(int(0.6 * sr)) / sr           # a short voiced vowel: its correlation peaks each period
    vowel = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12)) * np.hanning(len(t)) * 0.2
    done = classic.opus_roundtrip(vowel, sr, 6)
    assert abs(done.lag) <= 1 and done.residual_lag == 0
    assert done.audio.shape == vowel.shape


@needs_codec2
def test_codec2_round_trip_is_aligned_and_sized(speech_wav):
    x, sr = sf.read(str(speech_wav), dtype="float64")
    done = classic.codec2_roundtrip(x, sr, "3200")
    assert done.audio.shape == x.shape
    assert 0 < done.lag < 0.05 * sr and done.residual_lag == 0
    frames = len(x) * classic.CODEC2_RATE // sr // 160            # 20 ms frames of 64 bits
    assert abs(done.num_bytes - frames * 8) <= 16                 # + the .c2 header
    with pytest.raises(ValueError, match="unknown Codec2 mode"):
        classic.codec2_roundtrip(x, sr, "9600")


# ---------------------------------------------------------------------------- statistics
def test_mean_ci_is_a_student_t_interval():
    mean, half, n = report.mean_ci([1.0, 2.0, 3.0, 4.0, None, math.nan])
    assert (mean, n) == (2.5, 4)
    assert half == pytest.approx(3.182446 * np.std([1, 2, 3, 4], ddof=1) / 2, rel=1e-5)
    assert report.mean_ci([3.0])[:2] == (3.0, pytest.approx(math.nan, nan_ok=True))
    assert math.isnan(report.mean_ci([])[0])
    assert report.format_mean_ci(2.3456, 0.1234, 2) == "2.35 ± 0.12"
    assert report.format_mean_ci(2.3456, math.nan, 2) == "2.35"


def test_summary_says_on_how_many_clips_a_metric_is_defined():
    rows = [{"system": "m-nq1", "curve": "m", "family": "rvq", "setting": "n_q=1", "order": 1,
             "rate_source": "token file", "nominal_kbps": 0.5, "actual_kbps": kbps, "pesq": pesq, "si_sdr": 3.0}
            for kbps, pesq in ((0.6, None), (0.7, 2.0), (0.8, 3.0))]
    (entry,) = report.summarize(rows, ["pesq", "si_sdr"])
    assert (entry["n"], entry["pesq_n"], entry["si_sdr_n"]) == (3, 2, 3)
    assert entry["pesq"] == 2.5 and entry["actual_kbps"] == pytest.approx(0.7)
    table = report.summary_markdown([entry], ["pesq", "si_sdr"])
    assert "| m (RVQ) | n_q=1 | 3 | 0.50 | 0.70 ± 0.25 | 2.50 ± 6.35 (n=2) | 3.0 ± 0.0 |" in table


# ---------------------------------------------------------------------------- clips
def test_find_clips_ids_kinds_and_limits(tmp_path, speech_wav):
    for rel in ("b/one.wav", "a/one.wav", "a/one.flac", "music/song.wav", ".hidden/x.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(speech_wav, tmp_path / rel)
    clips = bench.find_clips(tmp_path)
    assert [c.id for c in clips] == ["a__one", "a__one.wav", "b__one", "music__song"]
    assert [c.kind for c in clips] == ["speech", "speech", "speech", "music"]
    assert len({c.digest for c in clips}) == 1                      # same bytes, same hash
    assert [c.id for c in bench.find_clips(tmp_path, max_clips=2)] == ["a__one", "a__one.wav"]
    assert {c.kind for c in bench.find_clips(tmp_path, kind="music")} == {"music"}
    (tmp_path / "empty").mkdir()
    with pytest.raises(bench.BenchError, match="no audio files found in"):
        bench.find_clips(tmp_path / "empty")
    with pytest.raises(bench.BenchError, match="no such audio file or folder"):
        bench.find_clips(tmp_path / "missing")


def test_a_manifest_gives_kinds_and_splits(tmp_path, speech_wav):
    shutil.copy(speech_wav, tmp_path / "x.wav")
    shutil.copy(speech_wav, tmp_path / "y.wav")
    (tmp_path / "manifest.csv").write_text("path,kind,split\nx.wav,music,test\ny.wav,speech,train\n")
    assert [(c.id, c.kind) for c in bench.find_clips(tmp_path)] == [("x", "music"), ("y", "speech")]
    assert [c.id for c in bench.find_clips(tmp_path, split="test")] == ["x"]


def test_a_manifest_gives_splits_and_speakers_and_caps_clips_per_speaker(tmp_path, speech_wav):
    rows = [("a1", "heldout", "ann"), ("b1", "heldout", "bob"), ("a2", "heldout", "ann"), ("a3", "test", "ann"),
            ("b2", "heldout", "bob"), ("n1", "heldout", "")]
    for name, _, _ in rows:
        shutil.copy(speech_wav, tmp_path / f"{name}.wav")
    (tmp_path / "list.csv").write_text("path,kind,split,speaker\n" + "".join(
        f"{name}.wav,speech,{split},{speaker}\n" for name, split, speaker in rows))
    clips = bench.find_clips(tmp_path / "list.csv")
    assert [(c.id, c.split, c.speaker) for c in clips] == [(n, sp, spk) for n, sp, spk in rows]
    assert [c.id for c in bench.find_clips(tmp_path / "list.csv", max_per_speaker=1)] == ["a1", "b1", "n1"]
    assert [c.id for c in bench.find_clips(tmp_path / "list.csv", max_per_speaker=2, split="heldout")] == [
        "a1", "b1", "a2", "b2", "n1"]
    assert [c.id for c in bench.find_clips(tmp_path / "list.csv", max_per_speaker=2, max_clips=2)] == ["a1", "b1"]
    (plain,) = bench.find_clips(tmp_path / "a1.wav")
    assert (plain.split, plain.speaker) == ("", "")


def _group_rows():
    rows = []
    for i, (split, speaker) in enumerate([("heldout", "ann"), ("heldout", "bob"), ("heldout_speaker", "cy"),
                                          ("heldout_speaker", "cy"), ("heldout_speaker", "dee")]):
        for system, offset in (("m-nq1", 0.0), ("opus-6kbps", 1.0)):
            rows.append({"system": system, "curve": system[:4], "family": "rvq", "setting": "s", "order": 1,
                         "rate_source": "token file", "nominal_kbps": 6.0, "actual_kbps": 5.0 + 0.1 * i,
                         "pesq": 1.0 + i * i / 7 + offset, "si_sdr": float(i), "clip": f"c{i}",
                         "split": split, "speaker": speaker})
    return rows


def test_each_split_and_speaker_gets_its_own_summary():
    rows = _group_rows()
    groups = report.group_summaries(rows, ["pesq", "si_sdr"])
    assert [(column, value) for column, value, _ in groups] == [
        ("split", "heldout"), ("split", "heldout_speaker"), ("speaker", "ann"), ("speaker", "bob"),
        ("speaker", "cy"), ("speaker", "dee")]
    for column, value, summary in groups:
        for entry in summary:
            members = [r for r in rows if r[column] == value and r["system"] == entry["system"]]
            pesq = np.array([r["pesq"] for r in members])
            assert entry["n"] == len(members)
            assert entry["pesq"] == pytest.approx(pesq.mean())
            if len(members) > 1:     # Student t, 95%: t(0.975, 1) = 12.706, t(0.975, 2) = 4.303
                t = {2: 12.7062, 3: 4.3027}[len(members)]
                assert entry["pesq_ci95"] == pytest.approx(t * pesq.std(ddof=1) / math.sqrt(len(members)), rel=1e-4)
    text = report.summary_markdown(report.summarize(rows, ["pesq"]), ["pesq"], (), groups)
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        "## split heldout", "## split heldout_speaker", "## speaker ann", "## speaker bob", "## speaker cy",
        "## speaker dee"]
    assert text.count("\n| m-nq (RVQ) |") == 7 and text.count("\n| opus (RVQ) |") == 7
    one_split = [dict(r, split="test", speaker="") for r in rows]
    assert report.group_summaries(one_split, ["pesq"]) == []
    assert "## " not in report.summary_markdown(report.summarize(one_split, ["pesq"]), ["pesq"], (),
                                                report.group_summaries(one_split, ["pesq"]))


def test_codec2_skips_music_clips(tmp_path):
    speech = bench.Clip("s", "s.wav", "speech", "0")
    music = bench.Clip("m", "m.wav", "music", "0")
    systems = [bench.System("opus-6kbps", "Opus", "opus", "6 kbps", 6, 6.0),
               bench.System("codec2-3200", "Codec2", "codec2", "3200", 3200, 3.2, speech_only=True)]
    tasks = bench._tasks([speech, music], systems, tmp_path, ["si_sdr"])
    assert [(t.clip.id, t.system.id) for t in tasks] == [("s", "opus-6kbps"), ("s", "codec2-3200"),
                                                         ("m", "opus-6kbps")]


# ---------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def setup(tmp_path_factory, speech_clips) -> dict:
    """Two 1.2 s real speech clips and three tiny models (RVQ with symbol statistics, AE, VAE)."""
    root = tmp_path_factory.mktemp("bench")
    clips = root / "clips"
    clips.mkdir()
    for path in speech_clips[:2]:
        x, sr = sf.read(str(path))
        sf.write(str(clips / path.name), x[: int(CLIP_SECONDS * sr)], sr)
    torch.manual_seed(0)
    rvq = tiny_model("rvq").eval()
    wav, _ = load_audio(clips / speech_clips[0].name)
    rvq.symbol_counts.copy_(torch.from_numpy(count_symbols(rvq.encode(wav[None]).numpy(), rvq.codebook_size)))
    models = {name: str(model.save(root / name)) for name, model in
              (("rvq", rvq), ("ae", tiny_model("ae")), ("vae", tiny_model("vae")))}
    return {"root": root, "clips": clips, "models": models}


def _config(setup, out, **kw) -> bench.BenchConfig:
    kw.setdefault("opus_kbps", [6])
    kw.setdefault("codec2_modes", ["3200"])
    return bench.BenchConfig(audio=setup["clips"], out=out, models=list(setup["models"].values()),
                             progress=False, **kw)


@pytest.fixture(scope="module")
def first_run(setup) -> bench.BenchResult:
    return bench.run_bench(_config(setup, setup["root"] / "out", jobs=2))


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_bench_writes_every_output(first_run, setup):
    out = first_run.out
    systems_per_clip = 3 + 1 + 1 + HAVE_OPUS + HAVE_CODEC2          # rvq n_q 1..3, AE, VAE, Opus, Codec2
    assert first_run.computed == 2 * systems_per_clip and first_run.cached == 0
    rows = _read_csv(out / "results.csv")
    assert len(rows) == 2 * systems_per_clip
    assert list(rows[0]) == report.ROW_COLUMNS
    summary = _read_csv(out / "summary.csv")
    assert len(summary) == systems_per_clip and all(s["n"] == "2" for s in summary)
    text = (out / "summary.md").read_text()
    assert text.count("\n| ") == systems_per_clip + 1 and "±" in text
    if report.have_matplotlib():
        for name in codec.metrics.available_metrics():
            assert (out / "plots" / f"{name}.png").stat().st_size > 5000
    else:
        assert "no plots: pip install matplotlib" in first_run.notes
    page = (out / "report.html").read_text()
    for row in rows:
        assert (out / row["audio"]).is_file() and row["audio"] in page
        assert (out / "cache" / row["clip"] / f"{row['system']}.json").is_file()
    for clip in {row["clip"] for row in rows}:
        assert (out / report.audio_path(clip, report.REFERENCE)).is_file()
    assert not list(out.rglob("*.tmp"))                             # atomic writes leave nothing behind
    assert json.loads((out / bench.MARKER).read_text())["bench_version"] == bench.BENCH_VERSION


@pytest.mark.skipif("visqol" not in codec.metrics.available_metrics(), reason="visqol-python not installed")
def test_visqol_without_numba_is_a_note_not_a_silent_slowdown(monkeypatch):
    import visqol.numba_accel
    notes = []
    monkeypatch.setattr(visqol.numba_accel, "has_numba", lambda: True)
    bench._note_slow_visqol(["pesq", "visqol"], notes)
    assert notes == []
    monkeypatch.setattr(visqol.numba_accel, "has_numba", lambda: False)
    bench._note_slow_visqol(["pesq"], notes)
    assert notes == []                                  # no ViSQOL asked for: nothing to say
    bench._note_slow_visqol(["pesq", "visqol"], notes)
    assert notes == ["ViSQOL runs without numba, 10 to 20 times slower: pip install 'visqol-python[accel]'"]


def test_rates_are_what_is_stored(first_run, setup, tmp_path):
    rows = {(r["clip"], r["system"]): r for r in first_run.rows}
    clip = sorted(setup["clips"].iterdir())[0]
    duration = CLIP_SECONDS
    for q in (1, 2, 3):
        row = rows[(clip.stem, f"rvq-nq{q}")]
        token_file = tmp_path / f"{q}.rvqt"
        codec.encode_file(clip, token_file, model=setup["models"]["rvq"], n_q=q)     # what `codec encode` writes
        assert row["bytes"] == token_file.stat().st_size
        assert row["actual_kbps"] == pytest.approx(row["bytes"] * 8 / duration / 1000)
        assert row["nominal_kbps"] == pytest.approx(q * 4 * 50 / 1000)              # log2(16) bits, 50 frames/s
        assert row["rate_source"] == "token file"
    ae = codec.load(setup["models"]["ae"])
    assert rows[(clip.stem, "ae-ae")]["actual_kbps"] == pytest.approx(ae.bitrate() / 1000)
    vae = codec.load(setup["models"]["vae"]).eval()
    wav, _ = load_audio(clip)
    with torch.no_grad():
        kl_bps = float(vae(wav[None]).bits_per_frame) * vae.frame_rate
    assert rows[(clip.stem, "vae-vae")]["actual_kbps"] == pytest.approx(kl_bps / 1000, rel=1e-4)
    if HAVE_OPUS:
        opus = rows[(clip.stem, "opus-6kbps")]
        assert opus["lag_samples"] in (-1, 0, 1) and opus["actual_kbps"] > 6
    if HAVE_CODEC2:
        assert rows[(clip.stem, "codec2-3200")]["actual_kbps"] == pytest.approx(3.2, rel=0.1)


def test_decoded_audio_is_what_was_scored(first_run):
    row = next(r for r in first_run.rows if r["system"] == "rvq-nq3")
    ref, sr = sf.read(str(first_run.out / report.audio_path(row["clip"], report.REFERENCE)))
    est, _ = sf.read(str(first_run.out / row["audio"]))
    assert ref.shape == est.shape == (int(CLIP_SECONDS * sr),)
    assert codec.metrics.si_sdr_db(ref, est) == pytest.approx(row["si_sdr"], abs=0.05)   # up to PCM16 rounding


def test_a_second_run_resumes_from_the_cache(first_run, setup):
    out = first_run.out
    (out / "report.html").unlink()
    again = bench.run_bench(_config(setup, out))
    assert again.computed == 0 and again.cached == len(first_run.rows)
    assert again.rows == first_run.rows
    assert (out / "report.html").is_file()
    # An interrupted run: results whose cache entry never got written are computed again, only they.
    lost = sorted((out / "cache").rglob("*.json"))[:3]
    for path in lost:
        path.unlink()
    resumed = bench.run_bench(_config(setup, out))
    assert resumed.computed == 3 and resumed.cached == len(first_run.rows) - 3
    # A changed clip invalidates its own results and nothing else.
    clip = sorted(setup["clips"].iterdir())[1]
    x, sr = sf.read(str(clip))
    sf.write(str(clip), 0.5 * x, sr)
    changed = bench.run_bench(_config(setup, out))
    assert changed.computed == len(first_run.rows) // 2


def test_a_manifest_run_reports_each_split_and_regroups_from_the_cache(setup, tmp_path):
    names = sorted(p.name for p in setup["clips"].iterdir())
    listing = setup["clips"] / "groups.csv"

    def run(splits, speakers):
        listing.write_text("path,kind,split,speaker\n" + "".join(
            f"{n},speech,{sp},{spk}\n" for n, sp, spk in zip(names, splits, speakers)))
        return bench.run_bench(bench.BenchConfig(audio=listing, out=tmp_path / "out", models=[setup["models"]["ae"]],
                                                 opus_kbps=[], codec2_modes=[], metrics=["si_sdr"], progress=False))

    try:
        first = run(["heldout", "heldout_speaker"], ["it_man", "tux_fr"])
        rows = _read_csv(tmp_path / "out" / "results.csv")
        assert [(r["split"], r["speaker"]) for r in rows] == [("heldout", "it_man"), ("heldout_speaker", "tux_fr")]
        groups = _read_csv(tmp_path / "out" / "groups.csv")
        assert [(g["group"], g["value"], g["n"]) for g in groups] == [
            ("split", "heldout", "1"), ("split", "heldout_speaker", "1"), ("speaker", "it_man", "1"),
            ("speaker", "tux_fr", "1")]
        for g, r in zip(groups, rows * 2):
            assert float(g["si_sdr"]) == pytest.approx(float(r["si_sdr"]), rel=1e-5)
        assert "## split heldout_speaker" in (tmp_path / "out" / "summary.md").read_text()
        again = run(["test", "test"], ["a", "a"])              # regrouped, nothing computed again
        assert again.computed == 0 and [r["si_sdr"] for r in again.rows] == [r["si_sdr"] for r in first.rows]
        assert not (tmp_path / "out" / "groups.csv").exists()
        assert "## " not in (tmp_path / "out" / "summary.md").read_text()
    finally:
        listing.unlink()


def test_refuses_a_foreign_folder_and_bad_options(setup, tmp_path, capsys):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    argv = ["--audio", str(setup["clips"]), "--out", str(foreign), "--opus", "none", "--codec2", "none",
            "--metrics", "si_sdr", "-q", "--models", setup["models"]["rvq"]]
    assert bench.main(argv) == 1
    err = capsys.readouterr().err
    assert "is not empty and holds no earlier benchmark" in err and "Traceback" not in err
    assert bench.main(argv + ["--force"]) == 0
    assert (foreign / "thesis.tex").read_text() == "keep me" and (foreign / "report.html").is_file()
    for bad in (["--opus", "3"], ["--codec2", "9600"], ["--jobs", "0"]):
        with pytest.raises(SystemExit) as exc:
            bench.main(argv + bad)
        assert exc.value.code == 2
    assert bench.main(argv[:-2] + ["--models", str(tmp_path / "nope")]) == 1
    assert "no such model" in capsys.readouterr().err
    assert bench.main(argv + ["--metrics", "loudness"]) == 1
    assert "unknown metrics: loudness" in capsys.readouterr().err


def test_models_can_be_labelled_and_unlabelled_duplicates_are_numbered(setup, tmp_path):
    rvq = setup["models"]["rvq"]
    systems = bench.all_systems([f"stage 1={rvq}", rvq, rvq], [], [], [])
    assert sorted({s.curve for s in systems}) == sorted({"stage_1", Path(rvq).name, Path(rvq).name + "-2"})
    assert {s.model for s in systems} == {rvq}                   # the label is not part of the path
    assert [s.id for s in systems if s.curve == "stage_1"] == ["stage_1-nq1", "stage_1-nq2", "stage_1-nq3"]
    odd = tmp_path / "a=b"                                       # an existing path with "=" is a path
    codec.load(rvq).save(odd)
    assert bench.split_label(str(odd)) == (None, str(odd))
    for bad in ("=x", "x="):
        with pytest.raises(bench.BenchError, match="expected LABEL=NAME_OR_PATH"):
            bench.split_label(bad)


def test_add_arguments_registers_on_a_subparser(setup, tmp_path):
    import argparse
    parser = argparse.ArgumentParser(prog="codec")
    sub = parser.add_subparsers(dest="command")
    bench.add_arguments(sub.add_parser("bench"))
    args = parser.parse_args(["bench", "--audio", str(setup["clips"]), "--out", str(tmp_path / "o"),
                              "--models", setup["models"]["ae"], "--opus", "none", "--codec2", "none",
                              "--metrics", "si_sdr,log_mel", "--max-clips", "1"])
    assert args.opus == [] and args.metrics == ["si_sdr", "log_mel"] and args.jobs == 1
    assert bench.run(args) == 0
    rows = _read_csv(tmp_path / "o" / "results.csv")
    assert len(rows) == 1 and rows[0]["pesq"] == "" and rows[0]["si_sdr"] != ""


def test_visqol_at_a_set_level_is_its_own_result_and_is_recorded(setup, tmp_path, capsys):
    pytest.importorskip("visqol")
    out = tmp_path / "level"
    config = dict(opus_kbps=[], codec2_modes=[], metrics=["visqol"])
    ae = [setup["models"]["ae"]]

    def run(level):
        return bench.run_bench(bench.BenchConfig(audio=setup["clips"], out=out, models=ae, progress=False,
                                                 visqol_level=level, **config))

    plain = run(None)
    assert plain.computed == 2 and not any("dBov" in n for n in plain.notes)
    leveled = run(-26.0)
    assert leveled.computed == 2                                  # not the cached scores at the recorded level
    assert json.loads((out / bench.MARKER).read_text())["visqol_level_dbov"] == -26.0
    assert any("-26 dBov active speech level" in n for n in leveled.notes)
    assert run(-26.0).cached == 2 and run(None).computed == 2
    for row in leveled.rows:                                      # the decoded audio scored at that level
        ref, sr = sf.read(str(out / report.audio_path(row["clip"], report.REFERENCE)))
        est, _ = sf.read(str(out / row["audio"]))
        expected = codec.metrics.visqol_score(ref, est, sr, "speech", level_dbov=-26.0)
        assert row["visqol"] == pytest.approx(expected, abs=0.02)           # up to PCM16 rounding
    argv = ["--audio", str(setup["clips"]), "--out", str(tmp_path / "bad"), "--opus", "none", "--codec2", "none",
            "--metrics", "visqol", "-q", "--models", ae[0]]
    for bad in ("5", "-100", "nan"):
        assert bench.main(argv + ["--visqol-level", bad]) == 1
        assert "--visqol-level is an active speech level in dBov, from -80 to 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    config["metrics"] = ["si_sdr"]
    out = tmp_path / "no_visqol"
    assert any("--visqol-level has no effect" in n for n in run(-26.0).notes)
