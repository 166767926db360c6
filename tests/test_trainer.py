"""Training: the smoke recipe learns on real speech; resume is exact; failures keep a good checkpoint."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import codec
from codec import train_state
from codec.losses import ReconstructionLoss
from codec.recipe import load_recipe, parse_override
from codec.trainer import TrainingError, lr_factor, train_from_recipe

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "recipes" / "smoke.toml"
ASSETS = f"data.root={json.dumps(str(ROOT / 'codec' / 'assets'))}"


def smoke(out, *overrides, resume=False, until=None):
    return train_from_recipe(SMOKE, out, resume=resume, overrides=[ASSETS, *overrides], progress=False, until=until)


def read_log(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def state(path):
    return load_file(str(Path(path) / "model.safetensors"))


@pytest.mark.slow
def test_smoke_recipe_lowers_the_loss_on_real_speech(tmp_path):
    result = smoke(tmp_path / "run", "train.log_every=1")
    losses = [r["loss/mel"] for r in read_log(tmp_path / "run") if "loss/mel" in r]
    assert len(losses) == 150
    first, last = sum(losses[:10]) / 10, sum(losses[-30:]) / 30     # quantizer dropout makes steps noisy
    assert last < 0.9 * first, (first, last)
    model = codec.load(result.model_dir)
    assert model.symbol_counts.sum() > 0                       # statistics for entropy coding
    assert model.config.name == "smoke"


def test_interrupt_and_resume_gives_the_weights_of_a_straight_run(tmp_path):
    common = ("train.steps=16", "train.checkpoint_every=8", "train.valid_every=8", "train.log_every=4")
    straight = smoke(tmp_path / "a", *common)
    stopped = smoke(tmp_path / "b", *common, until=8)
    assert stopped.interrupted and stopped.step == 8 and stopped.model_dir is None
    resumed = smoke(tmp_path / "b", *common, resume=True)
    assert resumed.step == 16 and not resumed.interrupted
    a, b = state(straight.model_dir), state(resumed.model_dir)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_adversarial_training_resumes_exactly_and_trains_the_discriminator(tmp_path):
    common = ("train.adversarial=true", "train.steps=6", "train.checkpoint_every=3", "train.valid_every=100",
              "train.log_every=1")
    straight = smoke(tmp_path / "a", *common)
    smoke(tmp_path / "b", *common, until=3)
    resumed = smoke(tmp_path / "b", *common, resume=True)
    for name in ("a", "b"):                                         # D's loss at every step, across the resume
        assert [r["step"] for r in read_log(tmp_path / name) if "loss/disc" in r] == [1, 2, 3, 4, 5, 6]
    a, b = state(straight.model_dir), state(resumed.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    disc = {name: load_file(str(train_state.list_checkpoints(tmp_path / name / "checkpoints")[-1] / "train_state.safetensors"))
            for name in ("a", "b")}
    first = load_file(str(train_state.list_checkpoints(tmp_path / "b" / "checkpoints")[0] / "train_state.safetensors"))
    keys = [k for k in disc["a"] if "disc" in k]
    assert keys and all(torch.equal(disc["a"][k], disc["b"][k]) for k in keys)
    assert any(not torch.equal(first[k], disc["a"][k]) for k in keys if k in first)     # D learned from step 3 to 6


def test_an_adversarial_step_runs_the_discriminator_on_real_audio_once_with_the_same_updates(tmp_path):
    """Reference: the step with D(real) run twice (without gradient for the generator's targets,
    then with it for D's loss), as it was. D's updates come after the generator's, which leaves D
    as it is, so one pass serves both: the same weights, one D forward fewer."""
    import copy
    from codec.discriminator import discriminator_loss, generator_losses
    from codec.trainer import Trainer, frozen
    recipe = load_recipe(SMOKE, [ASSETS, "train.adversarial=true"])
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    batch = torch.stack([trainer.train_set[i] for i in range(4)])
    trainer.model(batch)                                        # k-means initialisation out of the way
    model, disc = copy.deepcopy(trainer.model), copy.deepcopy(trainer.disc)
    opt, opt_d = copy.deepcopy(trainer.opt), copy.deepcopy(trainer.opt_d)
    opt.param_groups[0]["params"] = list(model.parameters())    # the copies step the copied weights
    opt_d.param_groups[0]["params"] = list(disc.parameters())
    calls = []
    trainer.disc.discriminators[0].register_forward_hook(lambda *args: calls.append(1))

    torch.manual_seed(7)
    trainer.train_step(batch)
    assert len(calls) == 3                                      # real, fake for G, fake for D

    torch.manual_seed(7)
    cfg, weights = recipe.train, recipe.loss
    for group in opt.param_groups:
        group["lr"] = cfg.lr * lr_factor(0, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio)
    out = model(batch)
    total, _ = trainer.loss(batch, out.audio, out.losses, 0)
    with torch.no_grad():
        real = disc(batch)
    with frozen(disc):
        fake = disc(out.audio)
    adv, fm = generator_losses(real, fake, cfg.adversarial_loss)
    total = total + weights.adversarial * adv + weights.feature_matching * fm
    opt.zero_grad(set_to_none=True)
    total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    d_loss = discriminator_loss(disc(batch), disc(out.audio.detach()), cfg.adversarial_loss)
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    for mine, ref in ((trainer.model, model), (trainer.disc, disc)):
        got, want = mine.state_dict(), ref.state_dict()
        assert got.keys() == want.keys()
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)


def test_resume_is_required_to_reuse_an_output_folder(tmp_path):
    smoke(tmp_path / "a", "train.steps=2", "train.checkpoint_every=1")
    with pytest.raises(TrainingError, match="already holds checkpoints: pass --resume"):
        smoke(tmp_path / "a", "train.steps=2")


def test_checkpoints_keep_the_last_k_and_a_crash_while_writing_keeps_the_previous(tmp_path, monkeypatch):
    smoke(tmp_path / "a", "train.steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=2", until=6)
    ckpts = train_state.list_checkpoints(tmp_path / "a" / "checkpoints")
    assert [p.name for p in ckpts] == ["step-00000004", "step-00000006"]

    def dies(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing")
    monkeypatch.setattr(train_state, "save_file", dies)
    with pytest.raises(KeyboardInterrupt):
        smoke(tmp_path / "a", "train.steps=12", "train.checkpoint_every=2", resume=True)
    names = sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir())
    assert names == ["step-00000004", "step-00000006"]          # nothing half-written under any name
    assert codec.load(ckpts[-1]).fingerprint()                  # the previous one still loads

    monkeypatch.undo()   # a SIGKILL leaves a temp folder behind: resume removes it and goes on
    (tmp_path / "a" / "checkpoints" / ".tmp-step-junk").mkdir()
    result = smoke(tmp_path / "a", "train.steps=8", "train.checkpoint_every=2", resume=True)
    assert result.step == 8
    assert not list((tmp_path / "a" / "checkpoints").glob(".tmp-step-*"))


def test_a_nan_loss_stops_with_a_clear_message_and_a_loadable_checkpoint(tmp_path, monkeypatch):
    real_forward = ReconstructionLoss.forward

    def poisoned(self, ref, est, losses, step):
        total, terms = real_forward(self, ref, est, losses, step)
        return (total * float("nan") if step == 5 else total), terms
    monkeypatch.setattr(ReconstructionLoss, "forward", poisoned)
    with pytest.raises(TrainingError, match=r"the loss became nan at step 5; stopping "
                                            r"\(the last good checkpoint is .*step-00000004\)"):
        smoke(tmp_path / "a", "train.steps=10", "train.checkpoint_every=2")
    assert codec.load(tmp_path / "a" / "checkpoints" / "step-00000004").fingerprint()


@pytest.mark.slow
@pytest.mark.parametrize("adversarial", [False, True])
def test_torchrun_two_processes_on_cpu_agree_on_weights_and_codebooks(tmp_path, adversarial):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}      # stdout buffered, as usual
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29532" if adversarial else "29531",
           "-m", "codec", "train", str(SMOKE), "--out", str(tmp_path / "ddp"),
           "--set", ASSETS, "--set", "train.steps=6", "--set", "train.checkpoint_every=3",
           "--set", f"train.adversarial={str(adversarial).lower()}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trained 6 steps; model written to" in proc.stdout       # flushed before the ranks' hard exit
    prints = [r["rank_fingerprints"] for r in read_log(tmp_path / "ddp") if "rank_fingerprints" in r]
    assert len(prints) == 1 and len(prints[0]) == 2 and prints[0][0] == prints[0][1]
    assert (tmp_path / "ddp" / "model" / "model.safetensors").is_file()


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    assert lr_factor(0, 10, 100, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100, 0.1) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    values = [lr_factor(s, 10, 100, 0.1) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_recipes_override_their_base_and_every_shipped_recipe_loads():
    rvq = load_recipe(ROOT / "recipes" / "speech16k_rvq.toml")
    vae = load_recipe(ROOT / "recipes" / "speech16k_vae.toml")
    assert (rvq.model.bottleneck, vae.model.bottleneck) == ("rvq", "vae")
    assert rvq.model.seanet == vae.model.seanet and rvq.train == vae.train      # same budget
    assert vae.loss.mse == 1.0 and rvq.loss.mse == 0.0
    for path in sorted((ROOT / "recipes").rglob("*.toml")):          # ablations/ too
        recipe = load_recipe(path)
        assert recipe.data.sample_rate == recipe.model.sample_rate, path.name
    assert parse_override("train.steps=5") == {"train": {"steps": 5}}
    assert parse_override("data.root=some/dir") == {"data": {"root": "some/dir"}}
    with pytest.raises(ValueError, match="unknown TrainConfig fields: stepz"):
        load_recipe(SMOKE, ["train.stepz=1"])


def test_warm_start_from_a_model_directory(tmp_path):
    first = smoke(tmp_path / "a", "train.steps=3")
    second = smoke(tmp_path / "b", "train.steps=1", f"train.init_from={json.dumps(str(first.model_dir))}",
                   "train.lr=0.0", "train.warmup_steps=1")
    a, b = state(first.model_dir), state(second.model_dir)
    conv = "decoder.net.0.conv.parametrizations.weight.original1"
    assert torch.equal(a[conv], b[conv])       # lr 0: the weights are exactly the starting model's
    with pytest.raises(TrainingError, match="cannot start from"):
        smoke(tmp_path / "c", "train.steps=1", f"train.init_from={json.dumps(str(first.model_dir))}", "model.n_q=2")


def test_cli_until_stops_with_a_checkpoint_and_resume_finishes(tmp_path, capsys):
    from codec.cli import main
    out = tmp_path / "run"
    args = ["train", str(SMOKE), "--out", str(out), "-q", "--set", ASSETS, "--set", "train.steps=6",
            "--set", "train.checkpoint_every=100", "--set", "train.valid_every=100"]
    assert main(args + ["--until", "3"]) == 0
    assert capsys.readouterr().err.strip() == "stopped at step 3; checkpoint written, continue with --resume"
    assert [p.name for p in train_state.list_checkpoints(out / "checkpoints")] == ["step-00000003"]
    assert not (out / "model").exists()
    assert main(args + ["--resume", "--until", "2"]) == 0        # already past it: no step, no final model
    assert capsys.readouterr().err.strip() == "stopped at step 3; checkpoint written, continue with --resume"
    assert not (out / "model").exists()
    assert main(args + ["--until", "0"]) == 1
    assert capsys.readouterr().err.strip() == "codec: error: --until must be a step >= 1, got 0"
    assert main(args + ["--resume"]) == 0
    assert codec.load(out / "model").config.name == "smoke"
    assert [p.name for p in train_state.list_checkpoints(out / "checkpoints")][-1] == "step-00000006"


def test_a_new_decoder_over_a_frozen_encoder_and_quantizer(tmp_path):
    first = smoke(tmp_path / "a", "train.steps=3")
    source = f"train.init_from={json.dumps(str(first.model_dir))}"
    parts = '["encoder", "bottleneck"]'
    second = smoke(tmp_path / "b", "train.steps=6", "train.log_every=1", source, f"train.init_parts={parts}",
                   f"train.freeze={parts}", "model.decoder=istft", "model.istft.dim=16", "model.istft.hidden=32",
                   "model.istft.depth=2", "data.valid_fraction=0.5", "train.valid_every=2")
    a, b = state(first.model_dir), state(second.model_dir)
    kept = [k for k in a if k.startswith(("encoder.", "bottleneck."))]
    assert kept and all(torch.equal(a[k], b[k]) for k in kept)         # weights, codebooks and EMA sums
    assert any(k.startswith("decoder.net.1.pw1") for k in b)          # the new decoder was trained
    assert codec.load(second.model_dir).config.decoder == "istft"
    kbps = {r["kbps"] for r in read_log(tmp_path / "b") if "kbps" in r}
    assert len(kbps) > 1                                                # quantizer dropout still draws


def test_a_decoder_trained_alone_changes_and_the_rest_does_not(tmp_path):
    first = smoke(tmp_path / "a", "train.steps=3")
    second = smoke(tmp_path / "b", "train.steps=3", f"train.init_from={json.dumps(str(first.model_dir))}",
                   'train.freeze=["encoder", "bottleneck"]')
    a, b = state(first.model_dir), state(second.model_dir)
    assert all(torch.equal(a[k], b[k]) for k in a if not k.startswith(("decoder.", "symbol_counts")))
    assert not all(torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))


@pytest.mark.parametrize("overrides, message", [
    (['train.init_parts=["encoder"]'], "train.init_parts needs train.init_from"),
    (['train.freeze=["encoder", "head"]'], r"train.freeze names unknown parts \['head'\]"),
])
def test_bad_part_names_are_a_training_error(tmp_path, overrides, message):
    with pytest.raises(TrainingError, match=message):
        smoke(tmp_path / "run", "train.steps=1", *overrides)


def test_resume_drops_the_log_lines_written_after_its_checkpoint(tmp_path):
    """Issue 31 row 8: steps logged after the last checkpoint (here 9 to 12, as a run killed
    between checkpoints leaves them, plus a torn line) are logged once, not twice."""
    common = ("train.steps=16", "train.checkpoint_every=8", "train.valid_every=100", "train.log_every=2")
    straight = smoke(tmp_path / "a", *common)
    smoke(tmp_path / "b", *common, until=8)
    log = tmp_path / "b" / "metrics.jsonl"
    after = [line for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines(keepends=True)
             if json.loads(line).get("step", 0) in (10, 12)]
    log.write_text(log.read_text() + "".join(after) + '{"step": 13, "lo')       # a kill mid-write
    smoke(tmp_path / "b", *common, resume=True)
    steps = [r["step"] for r in read_log(tmp_path / "b") if "loss" in r]
    assert steps == [r["step"] for r in read_log(straight.model_dir.parent) if "loss" in r] == list(range(2, 17, 2))


def test_resume_falls_back_to_the_newest_checkpoint_that_loads(tmp_path):
    common = ("train.steps=12", "train.checkpoint_every=4", "train.keep_checkpoints=3", "train.log_every=4")
    straight = smoke(tmp_path / "a", *common)
    smoke(tmp_path / "b", *common, until=8)
    newest = tmp_path / "b" / "checkpoints" / "step-00000008"
    (newest / "model.safetensors").write_bytes(b"\0" * 100)                   # damaged, yet "complete"
    with pytest.warns(UserWarning, match="step-00000008.*does not load.*trying the one before"):
        resumed = smoke(tmp_path / "b", *common, resume=True)
    assert resumed.step == 12
    a, b = state(straight.model_dir), state(resumed.model_dir)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_with_no_loadable_checkpoint_is_a_training_error(tmp_path):
    common = ("train.steps=8", "train.checkpoint_every=4", "train.log_every=4")
    smoke(tmp_path / "b", *common, until=4)
    (tmp_path / "b" / "checkpoints" / "step-00000004" / "train_state.safetensors").write_bytes(b"junk")
    with pytest.warns(UserWarning), pytest.raises(TrainingError, match="no checkpoint in .* loads: step-00000004"):
        smoke(tmp_path / "b", *common, resume=True)


def _constant_clips(root, rows):
    """One 0.4 s file per row, every sample equal to the row's value; -> the manifest path."""
    import soundfile as sf
    lines = ["path,package,kind,language,duration_s,synthetic,split,speaker,sex"]
    for name, value, language, split, speaker in rows:
        sf.write(root / f"{name}.wav", np.full(6400, value, dtype=np.float32), 16000, subtype="FLOAT")
        lines.append(f"{name}.wav,pkg,speech,{language},0.4,0,{split},{speaker},")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root / "manifest.csv"


EVAL_ROWS = [("tr_en", 0.01, "en", "train", "a"), ("tr_fr", 0.02, "fr", "train", "b"),
             ("va_en", 0.03, "en", "valid", "a"), ("va_fr", 0.04, "fr", "valid", "b"),
             ("hs_1", 0.05, "cs", "heldout_speaker", "c"), ("hs_2", 0.06, "nl", "heldout_speaker", "d"),
             ("ho_it", 0.07, "it", "heldout", "e")]


def test_validation_batches_keep_the_recipe_selection_for_valid_and_every_unseen_voice(tmp_path):
    from codec.data import DataConfig
    from codec.trainer import validation_batch
    config = DataConfig(root=str(_constant_clips(tmp_path, EVAL_ROWS)), segment_seconds=0.1, languages=("en",),
                        speakers=("a",), sampling="speaker")

    def values(split, items):
        batch = validation_batch(config, split, items)
        return None if batch is None else sorted({round(float(v), 4) for v in batch.flatten()})

    assert values("valid", 8) == [0.03]                 # the recipe's own voices only
    assert values("heldout_speaker", 8) == [0.05, 0.06]  # both people, though neither is English
    assert values("heldout", 2) == [0.07]
    assert values("heldout_speaker", 2) == [0.05, 0.06]  # spread over the split, not its first file
    assert validation_batch(config, "heldout_speaker", 8).shape == (8, 1, 1600)
    (tmp_path / "x").mkdir()
    no_heldout = DataConfig(root=str(_constant_clips(tmp_path / "x", EVAL_ROWS[:4])), segment_seconds=0.1)
    assert validation_batch(no_heldout, "heldout", 4) is None


def test_training_logs_validation_for_each_split_of_the_manifest(tmp_path):
    from codec.data import DataConfig
    from codec.losses import MultiScaleMel
    from codec.trainer import validate, validation_batch
    manifest = _constant_clips(tmp_path, EVAL_ROWS)
    result = smoke(tmp_path / "run", f"data.root={json.dumps(str(manifest))}", "data.segment_seconds=0.1",
                   "data.languages=[\"en\"]", "train.steps=4", "train.valid_every=4", "train.checkpoint_every=4",
                   "train.stats_items=4", "train.valid_items=6")
    logged = {k: v for r in read_log(tmp_path / "run") if r.get("step") == 4 for k, v in r.items()}
    model = codec.load(result.model_dir)
    config = DataConfig(root=str(manifest), segment_seconds=0.1, languages=("en",))
    mel = MultiScaleMel(16000)
    for split in ("valid", "heldout_speaker", "heldout"):
        expected = validate(model, validation_batch(config, split, 6), mel, split)
        assert sorted(expected) == sorted(k for k in logged if k.startswith(f"{split}/"))
        for key, value in expected.items():
            assert logged[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
