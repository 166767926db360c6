"""Two-process DDP on CPU (gloo): codebook statistics stay identical on every rank."""
import json

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.helpers import ddp_rvq_worker


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
