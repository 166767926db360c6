"""The inverse-STFT decoder (codec/istft.py): the centred inverse STFT against a slow reference
and as the exact inverse of the matching analysis, the head's layout, and config checks."""
from __future__ import annotations

import pytest
import torch

from codec.istft import ISTFTConfig, ISTFTDecoder, ISTFTHead, istft_same


def slow_istft_same(spec: torch.Tensor, hop: int, window: torch.Tensor) -> torch.Tensor:
    """Frame by frame: inverse real FFT, window, add at j * hop - pad; divide by the summed
    squared window; keep F * hop samples starting at sample 0."""
    n_fft, frames = window.shape[0], spec.shape[-1]
    pad = (n_fft - hop) // 2
    total = torch.zeros(spec.shape[0], frames * hop + 2 * n_fft, dtype=torch.float64)
    weight = torch.zeros(frames * hop + 2 * n_fft, dtype=torch.float64)
    for j in range(frames):
        start = j * hop - pad + n_fft                      # + n_fft: room on the left
        piece = torch.fft.irfft(spec[:, :, j], n=n_fft) * window
        total[:, start:start + n_fft] += piece
        weight[start:start + n_fft] += window.square()
    return (total / weight)[:, n_fft:n_fft + frames * hop]


def analysis(x: torch.Tensor, hop: int, window: torch.Tensor) -> torch.Tensor:
    """The STFT that istft_same inverts: frame j windows samples [j * hop - pad, j * hop - pad + n_fft)
    of x padded with zeros. x (B, F * hop) -> (B, n_fft/2 + 1, F)."""
    n_fft, frames = window.shape[0], x.shape[-1] // hop
    pad = (n_fft - hop) // 2
    padded = torch.nn.functional.pad(x, (pad, n_fft))
    return torch.stack([torch.fft.rfft(padded[:, j * hop:j * hop + n_fft] * window) for j in range(frames)], dim=-1)


@pytest.mark.parametrize("hop, factor, frames", [(320, 4, 9), (8, 2, 13), (6, 3, 1), (10, 4, 2)])
def test_centred_inverse_stft_matches_the_slow_reference(hop, factor, frames):
    torch.manual_seed(0)
    window = torch.hann_window(factor * hop, dtype=torch.float64)
    spec = torch.randn(2, factor * hop // 2 + 1, frames, dtype=torch.complex128)
    fast = istft_same(spec, hop, window)
    assert fast.shape == (2, frames * hop)
    torch.testing.assert_close(fast, slow_istft_same(spec, hop, window), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("hop, factor", [(320, 4), (8, 2), (12, 3)])
def test_centred_inverse_stft_inverts_the_matching_analysis(hop, factor):
    torch.manual_seed(1)
    window = torch.hann_window(factor * hop, dtype=torch.float64)
    x = torch.randn(3, 11 * hop, dtype=torch.float64)
    torch.testing.assert_close(istft_same(analysis(x, hop, window), hop, window), x, rtol=1e-9, atol=1e-10)


def test_head_maps_log_magnitude_and_phase_to_the_spectrum():
    torch.manual_seed(2)
    head = ISTFTHead(dim=5, channels=2, hop=4, n_fft=8).double()
    x = torch.randn(1, 5, 6, dtype=torch.float64)
    out = head(x)
    assert out.shape == (1, 2, 24)
    y = head.linear(x.transpose(1, 2))[0]                                  # (F, channels * 2 * bins)
    for c in range(2):
        logmag, phase = y[:, (2 * c) * 5:(2 * c + 1) * 5], y[:, (2 * c + 1) * 5:(2 * c + 2) * 5]
        spec = (logmag.exp() * torch.exp(1j * phase)).T[None]              # (1, bins, F)
        torch.testing.assert_close(out[0, c], istft_same(spec, 4, head.window)[0], rtol=1e-10, atol=1e-12)


def test_head_caps_the_magnitude_at_100():
    head = ISTFTHead(dim=1, channels=1, hop=4, n_fft=8).double()
    with torch.no_grad():
        head.linear.weight.zero_()
        head.linear.bias.zero_()
        head.linear.bias[:5] = 50.0                                        # log-magnitudes e^50, phases 0
    out = head(torch.zeros(1, 1, 3, dtype=torch.float64))
    spec = torch.full((1, 5, 3), 100.0, dtype=torch.complex128)
    torch.testing.assert_close(out[0], istft_same(spec, 4, head.window), rtol=1e-12, atol=0.0)


def test_decoder_gives_frames_times_hop_samples_and_trains():
    torch.manual_seed(3)
    decoder = ISTFTDecoder(latent_dim=6, channels=1, hop=10, cfg=ISTFTConfig(dim=8, hidden=12, depth=2, kernel_size=3))
    latent = torch.randn(2, 6, 7)
    audio = decoder(latent)
    assert audio.shape == (2, 1, 70)
    audio.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in decoder.parameters())


@pytest.mark.parametrize("field, value, message", [
    ("dim", 0, "istft.dim must be a positive integer"),
    ("depth", 2.5, "istft.depth must be a positive integer"),
    ("hidden", True, "istft.hidden must be a positive integer"),
    ("kernel_size", 4, "istft.kernel_size must be odd"),
    ("n_fft_factor", 1, "istft.n_fft_factor must be an integer >= 2"),
])
def test_bad_sizes_are_a_value_error(field, value, message):
    with pytest.raises(ValueError, match=message):
        ISTFTConfig(**{field: value})


def test_head_refuses_an_uncentrable_window():
    with pytest.raises(ValueError, match="n_fft - hop must be even"):
        ISTFTHead(dim=4, channels=1, hop=5, n_fft=10)
