"""Train several recipes side by side on one machine (one GPU, say) within a wall-clock budget.

    python tools/train_together.py --minutes 8 --out runs/gpu \\
        rvq=recipes/speech16k_rvq.toml vq=recipes/speech16k_vq.toml \\
        ae=recipes/speech16k_ae.toml vae=recipes/speech16k_vae.toml \\
        --free gan=recipes/speech16k_rvq.toml:train.adversarial=true \\
        --set train.batch_size=32

A small model leaves a big GPU mostly idle, so several runs at once cost little more than one.
Every run is an ordinary ``codec train`` run in OUT/NAME, so any of them can be resumed later.

How the step count is chosen. All runs start together and train ``--probe-steps`` steps, which
lie inside the learning-rate warm-up, where the schedule does not depend on the total. Their
measured speeds then give the number of steps that fits in what is left of the budget; the runs
named as positional arguments get one common count (the same budget: a fair comparison), each
``--free`` run its own. They resume with that count, so each equals a straight run of the same
recipe with ``train.steps`` set to it. A run still going at the deadline is interrupted (it
checkpoints) and its model is written at the step it reached; the summary says so.

A run is ``NAME=RECIPE`` with optional ``:table.key=value`` overrides after the recipe.

Measured (one H200, 2026-11-26, the command above with --minutes 8.9, batch 32, 5 runs): the
AE, VAE and VQ runs kept 80-105 ms a step throughout; the RVQ and GAN runs, timed at 93 and
114 ms in the probe, slowed to 170-360 ms once all five shared the GPU for longer (their
per-codebook host syncs wait for the GPU's time slices) and were cut short at 1,856 and 1,470
of 4,086 and 3,495 steps. Give an RVQ model a GPU to itself, or run the processes under MPS.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Run:
    name: str
    recipe: str
    overrides: list[str]
    free: bool
    out: Path = Path()
    proc: subprocess.Popen | None = None
    log: object = None
    seen: list[tuple[float, int]] = field(default_factory=list)   # (wall time, logged step)
    steps: int = 0
    reached: int = 0


def parse_run(text: str, free: bool) -> Run:
    name, sep, rest = text.partition("=")
    if not sep or not name or not rest:
        raise SystemExit(f"error: a run is NAME=RECIPE[:table.key=value...], got {text!r}")
    recipe, *overrides = rest.split(":")
    if not Path(recipe).is_file():
        raise SystemExit(f"error: no such recipe: {recipe}")
    return Run(name, recipe, overrides, free)


def last_step(run: Run) -> int:
    """The newest step in the run's metrics log (0 if none yet)."""
    path = run.out / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 4096))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return 0
    for line in reversed(lines):
        try:
            return int(json.loads(line)["step"])
        except (ValueError, KeyError):
            continue
    return 0


def start(run: Run, common: list[str], extra: list[str], flags: list[str]) -> None:
    cmd = [sys.executable, "-m", "codec", "train", run.recipe, "--out", str(run.out), *flags]
    for item in [*common, *run.overrides, *extra]:
        cmd += ["--set", item]
    if run.log is None:
        run.log = open(run.out.parent / f"{run.name}.log", "a")
    run.log.write(f"$ {' '.join(cmd)}\n")
    run.log.flush()
    run.proc = subprocess.Popen(cmd, stdout=run.log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def poll(runs: list[Run]) -> None:
    now = time.monotonic()
    for run in runs:
        step = last_step(run)
        if not run.seen or step != run.seen[-1][1]:
            run.seen.append((now, step))


def wait_all(runs: list[Run], deadline: float) -> bool:
    """Poll until every process has exited (True) or the deadline passes (False)."""
    while time.monotonic() < deadline:
        poll(runs)
        if all(r.proc.poll() is not None for r in runs):
            poll(runs)
            return True
        time.sleep(0.2)
    return False


def seconds_per_step(run: Run) -> float:
    """Wall seconds a step over the second half of the probe (past start-up and k-means).

    With too few logged steps for that, over the whole probe, start-up included (an overestimate).
    """
    pts = [p for p in run.seen if p[1] > 0]
    if not pts:
        raise SystemExit(f"error: run {run.name} logged no step in its probe; see its log")
    first, last = (pts[len(pts) // 2], pts[-1]) if len(pts) >= 3 else (run.seen[0], pts[-1])
    return (last[0] - first[0]) / (last[1] - first[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", help="NAME=RECIPE[:table.key=value...]: trained to one common step count")
    p.add_argument("--free", action="append", default=[], metavar="RUN", help="a run with its own step count")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, required=True, help="wall-clock budget for everything")
    p.add_argument("--probe-steps", type=int, default=200, help="timed steps, inside the warm-up")
    p.add_argument("--finish-seconds", type=float, default=40.0,
                   help="kept at the end for the final models (symbol statistics, saving)")
    p.add_argument("--margin", type=float, default=0.9, help="fraction of the time left that the step count fills")
    p.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every run")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    deadline = t0 + 60 * a.minutes
    runs = [parse_run(t, False) for t in a.runs] + [parse_run(t, True) for t in a.free]
    if not runs:
        p.error("no runs given")
    if len({r.name for r in runs}) != len(runs):
        p.error("run names must differ")
    a.out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        run.out = a.out / run.name
        if (run.out / "checkpoints").exists():
            p.error(f"{run.out} already holds checkpoints")

    # 1. Probe: probe-steps steps of every run at once, inside the warm-up (total steps irrelevant).
    from codec.recipe import load_recipe
    from codec.train_state import list_checkpoints
    warmup = min(load_recipe(r.recipe, a.common + r.overrides).train.warmup_steps for r in runs)
    if a.probe_steps > warmup:
        print(f"probe shortened to {warmup} steps, the shortest warm-up: past it the schedule depends on "
              f"the total", flush=True)
        a.probe_steps = warmup
    if a.probe_steps < 1:
        p.error("a run has no warm-up steps, so no step can be timed before its schedule depends on the total")
    for run in runs:
        start(run, a.common, ["train.steps=100000000"], ["--until", str(a.probe_steps)])
    if not wait_all(runs, deadline):
        raise SystemExit("error: the probe did not end within the budget")
    failed = [r.name for r in runs if r.proc.returncode != 0]
    if failed:
        raise SystemExit(f"error: run(s) {', '.join(failed)} failed in the probe; see their logs in {a.out}")
    t_probe = time.monotonic() - t0
    # start-up again costs about half the probe; checkpoints and validation, which the probe
    # did not time, get the rest of the margin
    left = a.margin * (deadline - time.monotonic() - a.finish_seconds - 0.5 * t_probe)
    speed = {r.name: seconds_per_step(r) for r in runs}
    for run in runs:
        run.steps = a.probe_steps + max(0, int(left / speed[run.name]))
    tied = [r for r in runs if not r.free]
    if tied:
        common_steps = min(r.steps for r in tied)
        for run in tied:
            run.steps = common_steps
    print(f"probe: {t_probe:.0f} s; " + ", ".join(f"{r.name} {speed[r.name] * 1000:.0f} ms/step -> {r.steps} steps"
                                                  for r in runs), flush=True)

    # 2. Train to the chosen counts; interrupt whatever is still going at the deadline.
    for run in runs:
        run.seen.clear()
        start(run, a.common, [f"train.steps={run.steps}"], ["--resume"])
    if not wait_all(runs, deadline - a.finish_seconds):
        for run in runs:
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGINT)
        wait_all(runs, deadline + 600)
    # 3. A run cut short: write its model at its newest checkpoint (its schedule did not finish).
    late = []
    for run in runs:
        found = list_checkpoints(run.out / "checkpoints")
        if (run.out / "model").is_dir():
            run.reached = run.steps
        elif found:
            run.reached = int(found[-1].name.split("-")[-1])
            start(run, a.common, [f"train.steps={run.reached}"], ["--resume"])
            late.append(run)
        # else: it failed before any checkpoint; the summary shows no model and 0 steps
    wait_all(late, deadline + 600)
    summary = {r.name: {"recipe": r.recipe, "overrides": a.common + r.overrides, "steps_planned": r.steps,
                        "steps_reached": r.reached, "cut_short": r in late,
                        "probe_seconds_per_step": round(speed[r.name], 4),
                        "model": str(r.out / "model") if (r.out / "model").is_dir() else None}
               for r in runs}
    (a.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2), f"\ntotal {time.monotonic() - t0:.0f} s", flush=True)
    for run in runs:
        run.log.close()
    return 0 if all(s["model"] for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
