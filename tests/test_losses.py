"""The band-envelope loss against a slow per-frame reference, its masking floor and its wiring."""
import math

import numpy as np
import pytest
import torch
import torchaudio

from codec.losses import EPS, BandEnvelope, LossWeights, ReconstructionLoss

SR = 16000


def slow_band_envelope(ref: np.ndarray, est: np.ndarray, sr: int, bands=32, window_seconds=0.08,
                       hop_seconds=0.02, f_min=50.0, range_db=45.0) -> float:
    """Frame by frame in float64: reflect-padded Hann frames, |rfft|^2, mel bands, dB, floor, mean |diff|."""
    n_fft, hop = round(sr * window_seconds), round(sr * hop_seconds)
    fb = torchaudio.functional.melscale_fbanks(n_fft // 2 + 1, f_min, sr / 2, bands, sr,
                                               norm="slaney", mel_scale="slaney").double().numpy()
    window = np.array([0.5 - 0.5 * math.cos(2 * math.pi * n / n_fft) for n in range(n_fft)])   # periodic Hann
    diffs = []
    padded = [np.pad(x, n_fft // 2, mode="reflect") for x in (ref, est)]
    for start in range(0, len(padded[0]) - n_fft + 1, hop):
        levels = []
        for x in padded:
            power = np.abs(np.fft.rfft(x[start:start + n_fft] * window)) ** 2
            levels.append(10 * np.log10(power @ fb + EPS ** 2))
        floor = max(levels[0].max(), levels[1].max()) - range_db
        diffs.extend(abs(max(a, floor) - max(b, floor)) for a, b in zip(*levels))
    return float(np.mean(diffs))


@pytest.fixture
def two_signals():
    g = torch.Generator().manual_seed(3)
    t = torch.arange(SR // 2) / SR
    voiced = sum(torch.sin(2 * math.pi * 140 * k * t) / k for k in range(1, 30)) * (1 + torch.sin(2 * math.pi * 3 * t))
    ref = 0.1 * voiced + 0.003 * torch.randn(t.shape, generator=g)
    est = 0.08 * voiced + 0.02 * torch.randn(t.shape, generator=g)
    return ref, est


def test_matches_the_slow_per_frame_reference(two_signals):
    ref, est = two_signals
    fast = BandEnvelope(SR).double()(ref.double()[None, None], est.double()[None, None]).item()
    slow = slow_band_envelope(ref.double().numpy(), est.double().numpy(), SR)
    assert fast == pytest.approx(slow, rel=1e-6)
    assert fast > 0.5                                   # the pair differs audibly: not a vacuous match


def test_a_gain_costs_its_decibels_and_identity_costs_nothing(two_signals):
    ref, _ = two_signals
    loss = BandEnvelope(SR)
    x = ref[None, None]
    assert loss(x, x).item() == 0.0
    # half the amplitude is 6.02 dB in every cell above the floor; cells near the floor are clipped
    half = loss(x, 0.5 * x).item()
    assert 4.0 < half <= 20 * math.log10(2) + 1e-4


def test_changes_far_under_the_frame_peak_are_masked():
    t = torch.arange(SR // 2) / SR
    tone = 0.5 * torch.sin(2 * math.pi * 500 * t)
    faint = 1e-4 * torch.sin(2 * math.pi * 6000 * t)     # about 74 dB under the tone
    loss = BandEnvelope(SR)
    assert loss(tone[None, None], (tone + faint)[None, None]).item() < 1e-3
    # the same change 20 dB under the tone is inside the 45 dB range and costs
    audible = 0.05 * torch.sin(2 * math.pi * 6000 * t)
    assert loss(tone[None, None], (tone + audible)[None, None]).item() > 0.5   # a large level change in the one or two 6 kHz bands of 32


def test_weight_zero_leaves_the_term_out_and_a_weight_adds_it(two_signals):
    ref, est = (x[None, None] for x in two_signals)
    off = ReconstructionLoss(SR, LossWeights())
    total_off, terms_off = off(ref, est, {}, step=0)
    assert "envelope" not in terms_off
    on = ReconstructionLoss(SR, LossWeights(envelope=0.1))
    total_on, terms_on = on(ref, est, {}, step=0)
    assert terms_on["envelope"].item() == pytest.approx(BandEnvelope(SR)(ref, est).item())
    assert total_on.item() == pytest.approx(total_off.item() + 0.1 * terms_on["envelope"].item(), rel=1e-5)


def test_gradient_reaches_the_estimate(two_signals):
    ref, est = (x[None, None] for x in two_signals)
    est = est.clone().requires_grad_(True)
    BandEnvelope(SR)(ref, est).backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
