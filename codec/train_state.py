"""Training checkpoints: model, optimizers, step and RNG state, without pickle.

A checkpoint is a directory ``step-00001234`` holding ``model.safetensors`` + ``config.json``
(loadable with ``codec.load``), ``train_state.safetensors`` (optimizer tensors and RNG state,
with the non-tensor parts as JSON metadata) and ``recipe.json``. It is written into a temp
directory that is renamed into place, so a crash mid-write leaves the previous checkpoint
untouched and no half checkpoint under a real name.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from codec.checkpoint import CheckpointError, save_model

STEP_DIR = re.compile(r"^step-(\d{8})$")


def flatten_optimizer(prefix: str, state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer state_dict -> (tensors, JSON-able rest)."""
    tensors, scalars = {}, {}
    for idx, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(root: Path, step: int, model, optimizers: dict, extra_modules: dict,
                    recipe_json: str, keep: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-step-", dir=root))
    try:
        save_model(model, tmp)
        tensors = {"rng.torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
        meta = {"step": step, "optimizers": {}}
        for name, opt in optimizers.items():
            t, m = flatten_optimizer(f"opt.{name}", opt.state_dict())
            tensors.update(t)
            meta["optimizers"][name] = m
        for name, module in extra_modules.items():
            tensors.update({f"module.{name}.{k}": v.detach().cpu().contiguous()
                            for k, v in module.state_dict().items()})
        save_file(tensors, str(tmp / "train_state.safetensors"), metadata={"meta": json.dumps(meta)})
        (tmp / "recipe.json").write_text(recipe_json)
        fsync_tree(tmp)                      # on disk before the rename makes it "complete"
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(root)                         # and the rename itself
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    """Flush a file's or a directory's entry to disk (directories: where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:                          # e.g. directories on some file systems
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file in folder, then folder itself."""
    for f in folder.iterdir():
        if f.is_file():
            _fsync(f)
    _fsync(folder)


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name))


def remove_partial(root: Path) -> None:
    """Delete temp directories left by a process killed while writing a checkpoint."""
    if root.is_dir():
        for p in root.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)


def load_train_state(path: Path, model, optimizers: dict, extra_modules: dict) -> int:
    """Restore everything saved by save_checkpoint into live objects; returns the step."""
    from safetensors import safe_open
    from codec.checkpoint import load_model

    loaded = load_model(path)
    model.load_state_dict(loaded.state_dict())
    state_file = path / "train_state.safetensors"
    try:
        tensors = load_file(str(state_file))
        with safe_open(str(state_file), "pt") as f:
            meta = json.loads(f.metadata()["meta"])
        for name, opt in optimizers.items():
            opt.load_state_dict(unflatten_optimizer(f"opt.{name}", tensors, meta["optimizers"][name]))
        for name, module in extra_modules.items():
            prefix = f"module.{name}."
            module.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
    except Exception as e:  # noqa: BLE001 - any unreadable or mismatched state is one clear error
        raise CheckpointError(f"{state_file}: unreadable training state ({type(e).__name__}: {e})") from None
    return int(meta["step"])
