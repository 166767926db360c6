"""tools/train_together.py: several runs at once, one common step count, each equal to a straight run."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import codec

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "smoke.toml")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("train_together", ROOT / "tools" / "train_together.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_together"] = module             # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_parse_run(tool):
    run = tool.parse_run(f"gan={SMOKE}:train.adversarial=true:model.n_q=2", free=True)
    assert (run.name, run.recipe, run.overrides, run.free) == ("gan", SMOKE, ["train.adversarial=true",
                                                                             "model.n_q=2"], True)
    with pytest.raises(SystemExit, match="NAME=RECIPE"):
        tool.parse_run(SMOKE, free=False)
    with pytest.raises(SystemExit, match="no such recipe"):
        tool.parse_run("a=recipes/nope.toml", free=False)


def test_last_step_skips_a_half_written_line(tool, tmp_path):
    run = tool.Run("a", SMOKE, [], False, out=tmp_path)
    assert tool.last_step(run) == 0                                   # no log yet
    (tmp_path / "metrics.jsonl").write_text('{"step": 10, "loss": 1}\n{"step": 20, "loss": 1}\n{"step": 3')
    assert tool.last_step(run) == 20


def test_seconds_per_step_uses_the_second_half(tool):
    run = tool.Run("a", SMOKE, [], False)
    # start-up: 5 s before the first logged step, then 0.2 s a step, then 0.1 s a step
    run.seen = [(0.0, 0), (5.0, 10), (7.0, 20), (8.0, 30), (9.0, 40)]
    assert tool.seconds_per_step(run) == pytest.approx((9.0 - 7.0) / (40 - 20))
    run.seen = [(0.0, 0), (5.0, 10)]                                  # too few: the whole probe
    assert tool.seconds_per_step(run) == pytest.approx(5.0 / 10)
    run.seen = [(0.0, 0)]
    with pytest.raises(SystemExit, match="logged no step"):
        tool.seconds_per_step(run)


def test_rejects_duplicate_names(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "train_together.py"), "--minutes", "1",
                        "--out", str(tmp_path), f"a={SMOKE}", f"a={SMOKE}"], capture_output=True, text=True)
    assert r.returncode == 2 and "run names must differ" in r.stderr
    assert not any(tmp_path.iterdir())


def test_runs_share_a_step_count_and_equal_a_straight_run(tmp_path):
    """Two runs with a common count; the first one's model equals the recipe trained straight to it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["--set", "train.threads=1", "--set", "train.log_every=2", "--set", "train.warmup_steps=40",
              "--set", "train.valid_every=100000",
              "--set", "train.checkpoint_every=100000"]      # no untimed work: the count fits
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "train_together.py"), "--minutes", "1",
                        "--probe-steps", "40", "--finish-seconds", "10", "--out", str(tmp_path / "together"),
                        f"a={SMOKE}", f"b={SMOKE}:model.bottleneck=vq", *common],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    if r.returncode == 1 and r.stderr == "error: the probe did not end within the budget\n":
        pytest.skip("the 40-step probe took the whole minute on a busy machine; nothing to compare")
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((tmp_path / "together" / "summary.json").read_text())
    assert summary["a"]["steps_planned"] == summary["b"]["steps_planned"] >= 40
    if summary["a"]["steps_planned"] == 40:   # the probe took the whole budget: nothing past it to check
        pytest.skip("no time was left after the probe on a busy machine; nothing to compare")
    a = summary["a"]
    steps = a["steps_reached"]
    straight = subprocess.run([sys.executable, "-m", "codec", "train", SMOKE, "--out", str(tmp_path / "straight"),
                               "--quiet", *common, "--set", f"train.steps={steps}"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert straight.returncode == 0, straight.stderr
    if a["cut_short"]:    # interrupted at the deadline: its schedule was for more steps than it ran
        pytest.skip(f"run a was cut short at step {steps} on a busy machine; nothing to compare")
    assert (codec.load(tmp_path / "together" / "a" / "model").full_fingerprint()
            == codec.load(tmp_path / "straight" / "model").full_fingerprint())
