"""Shared fixtures: seeded random generators and short clips of real recorded speech.

The clips are bundled in codec/assets/ (CC-BY-SA-3.0, see codec/assets/README.md):
single Asterisk voice prompts from the corpus's test split, 16 kHz mono PCM16.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

ASSETS = Path(__file__).resolve().parents[1] / "codec" / "assets"
SPEECH_CLIPS = ("example_speech.wav", "example_speech_es.wav", "example_speech_fr.wav")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def torch_rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


def _asset(name: str) -> Path:
    path = ASSETS / name
    if not path.is_file():
        raise FileNotFoundError(
            f"missing test asset {path}; recreate it with "
            "`python tools/make_corpus.py --out data --assets codec/assets`")
    return path


@pytest.fixture(scope="session")
def speech_wav() -> Path:
    """4.85 s of a woman speaking US English (16 kHz mono PCM16)."""
    return _asset(SPEECH_CLIPS[0])


@pytest.fixture(scope="session")
def speech_clips() -> list[Path]:
    """Three clips of real speech, 3.9 to 4.9 s, 16 kHz mono PCM16:
    English and Spanish (Allison Smith), French (June Wallack)."""
    return [_asset(name) for name in SPEECH_CLIPS]


@pytest.fixture(scope="module")
def mc():
    """tools/make_corpus.py, imported as a module (shared by test_data and test_make_corpus)."""
    import importlib.util
    import sys
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "make_corpus", Path(__file__).resolve().parents[1] / "tools" / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]
