"""Training recipes: small TOML files that override a base.

A recipe has four tables, one per config dataclass: ``[model]`` (CodecConfig, with
``[model.seanet]`` and ``[model.codebook]``), ``[data]`` (DataConfig), ``[train]``
(TrainConfig) and ``[loss]`` (LossWeights). A top-level ``base = "other.toml"`` (relative to
the recipe's folder) names the recipe it overrides; tables are merged key by key.
Relative data paths are taken from the current working directory.
"""
from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from codec.data import DataConfig
from codec.losses import LossWeights
from codec.model import CodecConfig, config_from_dict


@dataclass
class TrainConfig:
    steps: int = 100_000
    batch_size: int = 8
    lr: float = 3e-4
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.0
    warmup_steps: int = 500
    min_lr_ratio: float = 0.1           # cosine decay to lr * this at the last step
    grad_clip: float = 1.0
    amp: bool = False                   # bf16 autocast, GPU only
    seed: int = 0
    log_every: int = 10
    valid_every: int = 1000
    valid_items: int = 32               # validation crops
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    adversarial: bool = False
    adversarial_start: int = 0          # step at which the discriminator starts
    adversarial_loss: str = "hinge"     # or "lsgan"
    disc_lr: float = 3e-4
    stats_items: int = 512              # training crops encoded at the end for the symbol statistics
    threads: int = 0                    # torch threads on CPU; 0 = torch's default
    init_from: str = ""                 # warm start: a model directory (or bundled name) with the same config
    init_parts: tuple[str, ...] = ()    # with init_from: only these parts ("encoder", "bottleneck", "decoder"); () = all
    freeze: tuple[str, ...] = ()        # parts kept as they are: no gradient, and a frozen bottleneck's codebooks
                                        # do not learn (RVQ quantizer dropout still draws 1..n_q per batch)


@dataclass
class Recipe:
    model: CodecConfig = field(default_factory=CodecConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossWeights = field(default_factory=LossWeights)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict) -> "Recipe":
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown recipe tables: {', '.join(unknown)}")
        return cls(model=CodecConfig.from_dict(data.get("model", {})),
                   data=config_from_dict(DataConfig, data.get("data", {})),
                   train=config_from_dict(TrainConfig, data.get("train", {})),
                   loss=config_from_dict(LossWeights, data.get("loss", {})))


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: tables merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def read_recipe_dict(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"recipe {path} includes itself through 'base'")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such recipe file") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: invalid TOML: {e}") from None
    base = data.pop("base", None)
    if base is None:
        return data
    return merge(read_recipe_dict(path.parent / base, _seen + (path,)), data)


def parse_override(text: str) -> dict:
    """'train.steps=100' -> {'train': {'steps': 100}}; the value is read as TOML (bare words as strings)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ValueError(f"override {text!r} is not of the form table.key=value")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def load_recipe(path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    data = read_recipe_dict(Path(path))
    for text in overrides:
        data = merge(data, parse_override(text))
    model = data.setdefault("model", {})
    data.setdefault("data", {}).setdefault("sample_rate", model.get("sample_rate", CodecConfig.sample_rate))
    return Recipe.from_dict(data)
