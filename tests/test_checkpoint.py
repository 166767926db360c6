"""Model files: safetensors + JSON config round trip; anything that could unpickle is refused."""
import json
import pickle

import pytest
import torch

import codec
from codec import CheckpointError
from tests.helpers import tiny_model


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(0)
    model = tiny_model("rvq", n_q=4)
    model.train()(torch.randn(2, 1, 3200))
    model.symbol_counts += torch.arange(16)
    return model.eval()


def test_save_then_load_gives_identical_codes_and_state(trained, tmp_path):
    path = trained.save(tmp_path / "m")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = codec.load(path)
    assert loaded.config == trained.config
    x = torch.randn(2, 1, 5000)
    assert torch.equal(loaded.encode(x), trained.encode(x))
    assert loaded.fingerprint() == trained.fingerprint()
    assert torch.equal(loaded.symbol_counts, trained.symbol_counts)
    assert not loaded.training
    # the .safetensors file itself also loads (config.json beside it)
    assert codec.load(path / "model.safetensors").fingerprint() == trained.fingerprint()


def test_fingerprint_changes_with_any_weight(trained):
    before = trained.fingerprint()
    with torch.no_grad():
        trained.decoder.net[0].conv.parametrizations.weight.original1[0, 0, 0] += 1e-3
    assert trained.fingerprint() != before


def test_a_pickle_payload_is_refused(trained, tmp_path):
    path = trained.save(tmp_path / "m")
    (path / "model.safetensors").write_bytes(pickle.dumps(trained.state_dict()))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        codec.load(path)
    torch.save(trained.state_dict(), tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="pickled checkpoints such as .pt/.ckpt are refused"):
        codec.load(tmp_path / "model.pt")


def test_missing_or_mismatched_files_are_clear_errors(trained, tmp_path):
    with pytest.raises(CheckpointError, match="no bundled model of that name"):
        codec.load("no-such-model")
    path = trained.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    config["n_q"] = 5
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="weights do not match the config"):
        codec.load(path)
    config["bogus"] = 1
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="unknown CodecConfig fields: bogus"):
        codec.load(path)
    (path / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json: no such file"):
        codec.load(path)


def test_written_files_get_the_usual_umask_permissions(trained, tmp_path):
    import os
    umask = os.umask(0)
    os.umask(umask)
    path = trained.save(tmp_path / "m")
    for name in ("model.safetensors", "config.json"):
        assert (path / name).stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("bottleneck", ["rvq", "vq"])
def test_inference_only_file_drops_the_ema_sums_and_loads_like_the_original(tmp_path, bottleneck):
    from safetensors import safe_open

    torch.manual_seed(0)
    model = tiny_model(bottleneck)
    model.train()(torch.randn(2, 1, 3200))   # k-means, one EMA step
    model.eval()
    full, slim = model.save(tmp_path / "full"), model.save(tmp_path / "slim", inference_only=True)
    dropped = model.training_only_keys()
    assert dropped and all(key.endswith(".embed_sum") for key in dropped)
    with safe_open(str(slim / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(model.state_dict()) - set(dropped)
    assert (slim / "model.safetensors").stat().st_size < (full / "model.safetensors").stat().st_size
    loaded = codec.load(slim)
    x = torch.randn(1, 1, 4000)
    codes = model.encode(x)
    assert torch.equal(loaded.encode(x), codes)
    assert torch.equal(loaded.decode(codes), model.decode(codes))
    assert loaded.fingerprint() == model.fingerprint() == codec.load(full).fingerprint()
    state, rebuilt = model.state_dict(), loaded.state_dict()
    for key in dropped:   # embed = embed_sum / smoothed counts, inverted
        torch.testing.assert_close(rebuilt[key], state[key], rtol=1e-5, atol=1e-6)
    # training goes on from the rebuilt sums as from the originals
    batch = torch.randn(2, 1, 3200)
    for m in (model, loaded):
        torch.manual_seed(1)   # the same quantizer dropout and dead-code samples
        m.train()(batch)
    for key in dropped:
        torch.testing.assert_close(loaded.state_dict()[key], model.state_dict()[key], rtol=1e-5, atol=1e-6)


def test_fingerprint_ignores_the_ema_sums_but_not_the_codebook(trained):
    before = trained.fingerprint()
    buffers = dict(trained.named_buffers())
    sums = buffers[trained.training_only_keys()[0]]
    with torch.no_grad():
        sums.add_(1.0)
    assert trained.fingerprint() == before
    with torch.no_grad():
        buffers[trained.training_only_keys()[0].replace("embed_sum", "embed")][0, 0] += 1e-3
    assert trained.fingerprint() != before


@pytest.mark.parametrize("name", ["m" * 300, "a\x00b", "x/" * 3000], ids=["too-long", "nul", "deep"])
def test_a_model_name_the_file_system_cannot_hold_is_a_checkpoint_error(name):
    with pytest.raises(CheckpointError, match="no such model file or directory, and no bundled model"):
        codec.load(name)


def _tampered(base: dict, **changes) -> dict:
    config = json.loads(json.dumps(base))
    for key, value in changes.items():
        part, _, field = key.rpartition("__")
        (config[part] if part else config)[field] = value
    return config


TAMPERED = {   # issue 31 row 5: each of these used to load, divide by zero later, or give a traceback
    "zero-rate": ({"sample_rate": 0}, "CodecConfig.sample_rate must be from 1 to 768000, got 0"),
    "negative-width": ({"seanet__base_channels": -4}, "SEANetConfig.base_channels must be from 1 to 65536"),
    "zero-stride": ({"seanet__strides": [2, 0]}, "SEANetConfig.strides must be from 1 to 65536, got 0"),
    "string-count": ({"n_q": "4"}, "CodecConfig.n_q must be an integer, got '4'"),
    "bool-count": ({"n_q": True}, "CodecConfig.n_q must be an integer, got True"),
    "float-size": ({"codebook_size": 16.0}, "CodecConfig.codebook_size must be an integer"),
    "string-flag": ({"quantizer_dropout": "yes"}, "quantizer_dropout must be true or false"),
    "nan-decay": ({"codebook__decay": float("nan")}, "CodebookConfig.decay must be from 0.0 to 1.0, got nan"),
    "list-for-table": ({"seanet": [1, 2]}, "CodecConfig.seanet must be a table of SEANetConfig fields"),
    "null-table": ({"codebook": None}, "CodecConfig.codebook must be a table of CodebookConfig fields"),
    "string-list": ({"seanet__dilations": "139"}, "SEANetConfig.dilations must be a list"),
    "huge-width": ({"seanet__base_channels": 60000},
                   r"the config describes [\d,]+ bytes of weights, more than the [\d,]+ bytes of model.safetensors"),
    "huge-latent": ({"seanet__latent_dim": 65536}, r"the config describes [\d,]+ bytes of weights"),
}


@pytest.mark.parametrize("case", TAMPERED, ids=list(TAMPERED))
def test_a_tampered_config_is_a_checkpoint_error(trained, tmp_path, case):
    changes, message = TAMPERED[case]
    path = trained.save(tmp_path / "m")
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(_tampered(config, **changes)))
    with pytest.raises(CheckpointError, match=message):
        codec.load(path)


@pytest.mark.parametrize("text", ['{"seanet": ' + "[" * 100_000 + "]" * 100_000 + "}", "[1, 2]", "\xff\xfe{"],
                         ids=["deep-nesting", "not-an-object", "not-utf8"])
def test_a_config_that_is_not_a_table_is_a_checkpoint_error(trained, tmp_path, text):
    path = trained.save(tmp_path / "m")
    (path / "config.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(CheckpointError, match="invalid model config"):
        codec.load(path)
