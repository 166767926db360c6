"""Model files: safetensors weights plus the full config as JSON. Loading never unpickles.

A model directory holds ``model.safetensors`` (every parameter and buffer, codebooks and
symbol statistics included; an inference-only file leaves out the codebooks' EMA sums, which
loading rebuilds) and ``config.json`` (``CodecConfig.to_dict()``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from codec.fileio import atomic_write

WEIGHTS, CONFIG = "model.safetensors", "config.json"


class CheckpointError(ValueError):
    """A model file or directory that cannot be loaded."""


def state_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state dict; first 16 hex digits."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def save_model(model, directory, inference_only: bool = False) -> Path:
    """Write the model's weights and config into directory (see ``Codec.save``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    skip = set(model.training_only_keys()) if inference_only else set()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k not in skip}
    config = json.dumps(model.config.to_dict(), indent=2)
    atomic_write(directory / WEIGHTS, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    atomic_write(directory / CONFIG, lambda tmp: Path(tmp).write_text(config))
    return directory


def _model_files(path: Path) -> tuple[Path, Path]:
    if path.is_dir():
        return path / WEIGHTS, path / CONFIG
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: not a model directory or .safetensors file "
                              "(pickled checkpoints such as .pt/.ckpt are refused)")
    return path, path.with_name(CONFIG)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def load_model(path, map_location: str = "cpu"):
    """Load a model directory (or its .safetensors file with config.json beside it)."""
    from codec.model import Codec, CodecConfig

    weights, config_path = _model_files(Path(path))
    for f in (weights, config_path):
        if not f.is_file():
            raise CheckpointError(f"{f}: no such file")
    try:
        config = CodecConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        with torch.device("meta"):                  # the model's shape, without its memory
            skeleton = Codec(config)
    except (ValueError, TypeError, RecursionError, RuntimeError) as e:
        raise CheckpointError(f"{config_path}: invalid model config: {_first_line(e)}") from None
    skip = set(skeleton.training_only_keys())
    needed = sum(t.numel() * t.element_size() for k, t in skeleton.state_dict().items() if k not in skip)
    if needed > weights.stat().st_size:
        raise CheckpointError(f"{config_path}: the config describes {needed:,} bytes of weights, "
                              f"more than the {weights.stat().st_size:,} bytes of {weights.name}")
    try:
        state = load_file(str(weights), device=map_location)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{weights}: not a valid safetensors file ({e})") from None
    try:
        model = Codec(config)
    except (ValueError, TypeError, RuntimeError) as e:
        raise CheckpointError(f"{config_path}: invalid model config: {_first_line(e)}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{weights}: weights do not match the config: {e}") from None
    return model.eval()
