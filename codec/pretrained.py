"""Bundled models, found inside the installed package: no network access, ever."""
from __future__ import annotations

from pathlib import Path

PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def available() -> list[str]:
    """Names of the bundled models shipped with this installation."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir()
                  if not p.name.startswith(".") and (p / "model.safetensors").is_file())   # "." : tools' temporaries


def _exists(path: Path) -> bool:
    """path.exists(), with names the file system cannot hold (too long, NUL bytes) as absent."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def resolve(name_or_path) -> Path:
    """A bundled model's directory by name, or the given path."""
    path = Path(name_or_path)
    if _exists(path):
        return path
    if str(name_or_path) in available():
        return PRETRAINED_DIR / str(name_or_path)
    from codec.checkpoint import CheckpointError
    names = ", ".join(available()) or "none are installed"
    raise CheckpointError(f"{name_or_path}: no such model file or directory, and no bundled model of "
                          f"that name (bundled: {names})")
