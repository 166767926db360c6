"""tools/rvq_stages.py: per-stage residual energy, codes used and code entropy of an RVQ model."""
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import tiny_model

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("rvq_stages", ROOT / "tools" / "rvq_stages.py")
rvq_stages = importlib.util.module_from_spec(spec)
sys.modules["rvq_stages"] = rvq_stages
spec.loader.exec_module(rvq_stages)


def reference_table(books: list[torch.Tensor], latent: torch.Tensor) -> list[dict[str, float]]:
    """Frame by frame in float64: nearest code by brute force, residual, code histogram."""
    residual = latent.double().clone()                   # (N, D)
    total, rows = float((residual ** 2).sum()), []
    for book in books:
        book = book.double()
        codes = []
        for n in range(residual.shape[0]):
            k = min(range(book.shape[0]), key=lambda j: float(((residual[n] - book[j]) ** 2).sum()))
            residual[n] = residual[n] - book[k]
            codes.append(k)
        counts = [codes.count(k) for k in set(codes)]
        entropy = -sum(c / len(codes) * math.log2(c / len(codes)) for c in counts)
        rows.append({"residual_db": 10 * math.log10(float((residual ** 2).sum()) / total),
                     "codes_used": len(counts), "entropy_bits": entropy})
    return rows


def test_stage_table_matches_a_per_frame_reference():
    torch.manual_seed(0)
    model = tiny_model("rvq", n_q=3, codebook_size=16, quantizer_dropout=False).train()
    model(torch.randn(4, 1, 320 * 20) * 0.3)             # k-means initialises the codebooks
    model.eval()
    latents = [torch.randn(1, 8, 13), torch.randn(1, 8, 7) * 0.5]
    got = rvq_stages.stage_table(model, latents, [model.bottleneck.encode(z) for z in latents])
    flat = torch.cat([z[0].t() for z in latents])
    expected = reference_table([layer.codebook.embed for layer in model.bottleneck.layers], flat)
    assert len(got) == 3
    for g, e in zip(got, expected):
        assert g["codes_used"] == e["codes_used"]
        assert g["residual_db"] == pytest.approx(e["residual_db"], abs=1e-3)
        assert g["entropy_bits"] == pytest.approx(e["entropy_bits"], abs=1e-6)


def test_the_bundled_model_prints_one_row_per_codebook(capsys, speech_wav):
    pytest.importorskip("pesq")
    assert rvq_stages.main(["speech16k", "--audio", str(speech_wav), "--pesq"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 12
    residual_db = [float(r.split("|")[2]) for r in rows]
    assert residual_db[-1] < residual_db[0] < 0
    pesq = [float(r.split("|")[5]) for r in rows]
    unquantised = float(out.rsplit("PESQ-WB", 1)[1])
    assert all(1.0 <= v <= 4.65 for v in pesq + [unquantised])
    assert pesq[-1] > pesq[0]              # twelve codebooks decode better than one


def test_a_model_without_codebooks_is_a_one_line_error(capsys, speech_wav):
    assert rvq_stages.main(["speech16k_ae", "--audio", str(speech_wav)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rvq_stages: error:") and "no codebooks" in err and err.count("\n") == 1
