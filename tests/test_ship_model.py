"""tools/ship_model.py: a trained model becomes an inference-only bundled model, checked."""
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import codec
import codec.pretrained
from tests.helpers import tiny_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import ship_model  # noqa: E402


@pytest.fixture
def pretrained(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "pretrained"
    monkeypatch.setattr(codec.pretrained, "PRETRAINED_DIR", folder)
    return folder


def trained_model(tmp_path: Path, counts: bool = True, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = tiny_model("rvq", n_q=4)
    model.train()(torch.randn(2, 1, 3200))
    if counts:
        model.symbol_counts += torch.arange(16)
    return model.eval().save(tmp_path / f"run{seed}" / "model")


def test_ships_an_inference_only_copy_with_the_same_fingerprint(tmp_path, pretrained, capsys):
    source = trained_model(tmp_path)
    assert ship_model.main([str(source), "tiny"]) == 0
    shipped = pretrained / "tiny"
    assert sorted(p.name for p in pretrained.iterdir()) == ["tiny"]   # no staging folder left
    with safe_open(str(shipped / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if k.endswith("embed_sum")]
    assert codec.load("tiny").fingerprint() == codec.load(source).fingerprint()
    assert "codes and audio identical" in capsys.readouterr().out


def test_refuses_to_replace_without_force_and_replaces_with_it(tmp_path, pretrained, capsys):
    first, second = trained_model(tmp_path, seed=0), trained_model(tmp_path, seed=1)
    assert ship_model.main([str(first), "tiny"]) == 0
    before = (pretrained / "tiny" / "model.safetensors").read_bytes()
    assert ship_model.main([str(second), "tiny"]) == 1
    assert "exists; pass --force" in capsys.readouterr().err
    assert (pretrained / "tiny" / "model.safetensors").read_bytes() == before
    assert ship_model.main([str(second), "tiny", "--force"]) == 0
    assert sorted(p.name for p in pretrained.iterdir()) == ["tiny"]
    assert codec.load("tiny").fingerprint() == codec.load(second).fingerprint() != codec.load(first).fingerprint()


def test_shipped_folder_gets_umask_permissions(tmp_path, pretrained):
    import os
    umask = os.umask(0)
    os.umask(umask)
    assert ship_model.main([str(trained_model(tmp_path)), "tiny"]) == 0
    assert (pretrained / "tiny").stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_failed_swap_puts_the_previous_model_back(tmp_path, pretrained, monkeypatch):
    first, second = trained_model(tmp_path, seed=0), trained_model(tmp_path, seed=1)
    assert ship_model.main([str(first), "tiny"]) == 0
    before = (pretrained / "tiny" / "model.safetensors").read_bytes()
    real_rename = Path.rename

    def rename(self, target):
        if Path(target) == pretrained / "tiny" and self.name.startswith(".tiny.") and ".old." not in self.name:
            raise KeyboardInterrupt   # between moving the old model aside and renaming the new one in
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        ship_model.main([str(second), "tiny", "--force"])
    assert (pretrained / "tiny" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in pretrained.iterdir()) == ["tiny"]


def test_temporaries_are_not_bundled_models(pretrained):
    (pretrained / ".tiny.abc123").mkdir(parents=True)
    (pretrained / ".tiny.abc123" / "model.safetensors").write_bytes(b"")
    assert codec.pretrained.available() == []


@pytest.mark.parametrize("name", ["", "a/b", ".hidden"])
def test_rejects_names_that_are_not_plain_folders(tmp_path, pretrained, capsys, name):
    assert ship_model.main([str(trained_model(tmp_path)), name]) == 1
    assert "is not a plain folder name" in capsys.readouterr().err
    assert not pretrained.exists()


def test_rejects_a_model_without_symbol_statistics(tmp_path, pretrained, capsys):
    assert ship_model.main([str(trained_model(tmp_path, counts=False)), "tiny"]) == 1
    assert "no symbol statistics" in capsys.readouterr().err
    assert not pretrained.exists()
