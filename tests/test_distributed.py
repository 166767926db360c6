"""Two-process DDP on CPU (gloo): codebook statistics stay identical on every rank; a rank
that ran a distributed job exits with its output flushed and without interpreter finalisation."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.helpers import ddp_bypass_worker, ddp_rvq_worker


@pytest.mark.parametrize("per_sample", [False, True], ids=["dropout-per-batch", "dropout-per-sample"])
def test_codebooks_identical_on_both_ranks_after_several_steps(tmp_path, per_sample):
    mp.spawn(ddp_rvq_worker, args=(2, str(tmp_path / "init"), str(tmp_path), 6, per_sample), nprocs=2, join=True)
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between ranks"
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert logs[0]["used"] == logs[1]["used"], "every rank must run the same number of stages"
    assert len(set(logs[0]["used"])) > 1, "dropout should have varied the number of codebooks"
    assert logs[0]["resets"] > 0, "the run should exercise dead-code replacement"
    assert all(bool(a[f"layers.{i}.codebook.initialized"]) for i in range(3))


def test_bypass_is_drawn_over_the_global_batch(tmp_path):
    """Ranks seeded alike still bypass different samples: rank 0 draws for the whole batch.
    (Only rank 0 draws the k-means initialisation, so with local draws ranks 1 and 2 would
    bypass the same positions at every step.)"""
    mp.spawn(ddp_bypass_worker, args=(3, str(tmp_path / "init"), str(tmp_path), 4), nprocs=3, join=True)
    masks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1, 2)]
    assert masks[0] != masks[1] and masks[1] != masks[2] and masks[0] != masks[2]
    flat = [m for rank in masks for step in rank for m in step]
    assert 0.2 < sum(flat) / len(flat) < 0.8


EXIT_SCRIPT = """
import atexit, sys
from codec import distributed
atexit.register(lambda: print("finalised", file=sys.stderr, flush=True))
distributed.exit_process(5)                 # not after a distributed job: a no-op
if sys.argv[1] == "after-job":
    distributed._backend_threads_left = True    # what shut_down() marks
print("buffered out", end="")
sys.stderr.write("buffered err")
distributed.exit_process(3)
sys.exit(7)
"""


@pytest.mark.parametrize("case", ["after-job", "no-job"])
def test_exit_process_flushes_and_skips_finalisation_only_after_a_distributed_job(case):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}     # buffered, as usual
    proc = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, case], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.stdout == "buffered out"
    if case == "after-job":
        assert (proc.returncode, proc.stderr) == (3, "buffered err")
    else:
        assert (proc.returncode, proc.stderr) == (7, "buffered errfinalised\n")
