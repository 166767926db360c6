"""Two-process DDP on CPU (gloo): codebook statistics stay identical on every rank."""
import json

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from tests.helpers import ddp_rvq_worker


def test_codebooks_identical_on_both_ranks_after_several_steps(tmp_path):
    mp.spawn(ddp_rvq_worker, args=(2, str(tmp_path / "init"), str(tmp_path), 6), nprocs=2, join=True)
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs between ranks"
    logs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert logs[0]["used"] == logs[1]["used"], "quantizer dropout must draw the same n_q on every rank"
    assert len(set(logs[0]["used"])) > 1, "dropout should have varied the number of codebooks"
    assert logs[0]["resets"] > 0, "the run should exercise dead-code replacement"
    assert all(bool(a[f"layers.{i}.codebook.initialized"]) for i in range(3))
