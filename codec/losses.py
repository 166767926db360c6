"""Reconstruction losses and the signal distances the validation and benchmark report.

All functions take waveforms (B, C, T) and return scalars (mean over the batch).

Formulas (S = |STFT|, M = mel filterbank of S, eps = 1e-5):
    log-mel L1      mean over scales w of  mean |log(M_w(x) + eps) - log(M_w(y) + eps)|
    multi-res STFT  mean over scales of    ||S(x) - S(y)||_F / ||S(x)||_F  +  mean |log(S(x) + eps) - log(S(y) + eps)|
    band envelope   mean |max(E_x, f) - max(E_y, f)|, E = 10 log10(B(|STFT|^2) + eps^2) in dB on a coarse
                    auditory grid (32 mel bands from 50 Hz, 80 ms Hann windows every 20 ms) and f, per frame,
                    45 dB under the louder of the two frames' peaks: errors in bands far under the frame's
                    loudest band cost nothing; the floor is relative to each frame, so a quiet frame
                    (a pause, background noise) counts as much as a loud one
    SI-SDR          10 log10(||a x||^2 / ||a x - y||^2),  a = <y, x> / ||x||^2   (x reference, y estimate, dB)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

EPS = 1e-5


class MultiScaleMel(nn.Module):
    """Mean L1 distance between log-mel spectrograms at several window sizes."""

    def __init__(self, sample_rate: int, windows: tuple[int, ...] = (256, 512, 1024, 2048),
                 n_mels: tuple[int, ...] = (32, 64, 80, 80)) -> None:
        super().__init__()
        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=w, hop_length=w // 4, n_mels=m,
                                                 power=1.0, center=True, norm="slaney", mel_scale="slaney")
            for w, m in zip(windows, n_mels))

    def forward(self, ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        total = ref.new_zeros(())
        for mel in self.mels:
            total = total + (torch.log(mel(ref) + EPS) - torch.log(mel(est) + EPS)).abs().mean()
        return total / len(self.mels)


class MultiResolutionSTFT(nn.Module):
    """Spectral convergence plus log-magnitude L1, averaged over several resolutions."""

    def __init__(self, windows: tuple[int, ...] = (512, 1024, 2048)) -> None:
        super().__init__()
        self.windows = windows
        for w in windows:
            self.register_buffer(f"window_{w}", torch.hann_window(w), persistent=False)

    def magnitude(self, x: torch.Tensor, w: int) -> torch.Tensor:
        spec = torch.stft(x.reshape(-1, x.shape[-1]), n_fft=w, hop_length=w // 4,
                          window=getattr(self, f"window_{w}"), return_complex=True)
        return spec.abs()

    def forward(self, ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        total = ref.new_zeros(())
        for w in self.windows:
            s_ref, s_est = self.magnitude(ref, w), self.magnitude(est, w)
            convergence = torch.linalg.norm(s_ref - s_est) / torch.linalg.norm(s_ref).clamp(min=EPS)
            log_mag = (torch.log(s_ref + EPS) - torch.log(s_est + EPS)).abs().mean()
            total = total + convergence + log_mag
        return total / len(self.windows)


class BandEnvelope(nn.Module):
    """Mean absolute dB difference of coarse band-energy envelopes above a per-frame floor.

    The fine-resolution terms (log-mel, STFT) let a decoder fill a band it cannot predict with
    noise whose energy still wanders from frame to frame; this term compares the energy of wide
    bands over 80 ms, the grid on which such wandering shows, and ignores cells more than
    ``range_db`` under the frame's loudest band (in either signal), which masking hides. The
    floor has no absolute part: in a pause, the background noise's bands are compared as closely
    as speech (an absolute or clip-relative floor is untried).
    """

    def __init__(self, sample_rate: int, bands: int = 32, window_seconds: float = 0.08,
                 hop_seconds: float = 0.02, f_min: float = 50.0, range_db: float = 45.0) -> None:
        super().__init__()
        self.range_db = range_db
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=round(sample_rate * window_seconds), hop_length=round(sample_rate * hop_seconds),
            f_min=f_min, n_mels=bands, power=2.0, center=True, norm="slaney", mel_scale="slaney")

    def db(self, x: torch.Tensor) -> torch.Tensor:
        """(..., T) -> (..., bands, frames) band energies in dB."""
        return 10 * torch.log10(self.mel(x) + EPS ** 2)

    def forward(self, ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        r, e = self.db(ref), self.db(est)
        floor = (torch.maximum(r.amax(-2, keepdim=True), e.amax(-2, keepdim=True)) - self.range_db).detach()
        return (torch.maximum(r, floor) - torch.maximum(e, floor)).abs().mean()


def si_sdr(ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB per item: (B, C, T) -> (B,)."""
    ref, est = ref.flatten(1).double(), est.flatten(1).double()
    ref = ref - ref.mean(1, keepdim=True)
    est = est - est.mean(1, keepdim=True)
    scale = (est * ref).sum(1, keepdim=True) / ref.pow(2).sum(1, keepdim=True).clamp(min=1e-12)
    target = scale * ref
    ratio = target.pow(2).sum(1) / (est - target).pow(2).sum(1).clamp(min=1e-12)
    return (10 * torch.log10(ratio.clamp(min=1e-12))).float()


@dataclass
class LossWeights:
    l1: float = 0.1                 # time-domain L1
    mel: float = 1.0                # multi-scale log-mel L1
    stft: float = 1.0               # multi-resolution STFT
    envelope: float = 0.0           # coarse band-envelope dB distance (BandEnvelope); off by default
    mse: float = 0.0                # Gaussian log-likelihood term (fixed variance): the VAE's ELBO term
    commitment: float = 1.0         # VQ/RVQ commitment
    kl: float = 1e-2                # VAE beta (after warm-up)
    kl_warmup_steps: int = 5000     # beta grows linearly from 0 over these steps
    adversarial: float = 1.0        # generator's adversarial loss (when a discriminator is on)
    feature_matching: float = 2.0


class ReconstructionLoss(nn.Module):
    """Weighted sum of the reconstruction terms and the bottleneck's own terms."""

    def __init__(self, sample_rate: int, weights: LossWeights) -> None:
        super().__init__()
        self.weights = weights
        self.mel = MultiScaleMel(sample_rate)
        self.stft = MultiResolutionSTFT()
        self.envelope = BandEnvelope(sample_rate) if weights.envelope else None

    def kl_beta(self, step: int) -> float:
        warmup = self.weights.kl_warmup_steps
        return self.weights.kl * (min(1.0, step / warmup) if warmup > 0 else 1.0)

    def forward(self, ref: torch.Tensor, est: torch.Tensor, bottleneck_losses: dict[str, torch.Tensor],
                step: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total, named unweighted terms)."""
        w = self.weights
        terms = {"l1": F.l1_loss(est, ref), "mel": self.mel(ref, est), "stft": self.stft(ref, est)}
        if self.envelope is not None:
            terms["envelope"] = self.envelope(ref, est)
        if w.mse:
            terms["mse"] = F.mse_loss(est, ref)
        terms.update(bottleneck_losses)
        scale = {"l1": w.l1, "mel": w.mel, "stft": w.stft, "envelope": w.envelope, "mse": w.mse,
                 "commitment": w.commitment, "kl": self.kl_beta(step)}
        total = sum(scale[name] * value for name, value in terms.items())
        return total, terms
