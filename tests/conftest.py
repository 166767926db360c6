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
