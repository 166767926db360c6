"""Multi-scale STFT discriminator (as in EnCodec) and the adversarial losses.

Each scale takes the complex STFT of the waveform as a 2-channel image (real, imaginary),
runs a stack of 2-d convolutions dilated along time and strided along frequency, and
returns logits plus the feature maps used for feature matching.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class STFTDiscriminator(nn.Module):
    def __init__(self, n_fft: int, channels: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        layers = [weight_norm(nn.Conv2d(2, channels, (3, 9), padding=(1, 4)))]
        for i in range(depth):
            layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 9), stride=(1, 2),
                                                dilation=(2 ** i, 1), padding=(2 ** i, 4))))
        layers.append(weight_norm(nn.Conv2d(channels, channels, (3, 3), padding=(1, 1))))
        self.layers = nn.ModuleList(layers)
        self.out = weight_norm(nn.Conv2d(channels, 1, (3, 3), padding=(1, 1)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav (B, 1, T) -> logits (B, 1, frames, bins) and the feature maps."""
        spec = torch.stft(wav.reshape(-1, wav.shape[-1]), self.n_fft, self.n_fft // 4,
                          window=self.window, return_complex=True)
        x = torch.stack([spec.real, spec.imag], dim=1).transpose(2, 3)    # (B, 2, frames, bins)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.out(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, scales: tuple[int, ...] = (2048, 1024, 512), channels: int = 16) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(n, channels) for n in scales)

    def forward(self, wav: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(wav) for d in self.discriminators]


def discriminator_loss(real, fake, kind: str = "hinge") -> torch.Tensor:
    """Loss of the discriminator on outputs for real and (detached) fake audio."""
    total = 0.0
    for (lr, _), (lf, _) in zip(real, fake):
        if kind == "hinge":
            total = total + F.relu(1 - lr).mean() + F.relu(1 + lf).mean()
        else:
            total = total + (lr - 1).pow(2).mean() + lf.pow(2).mean()
    return total / len(real)


def generator_losses(real, fake, kind: str = "hinge") -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial loss, feature-matching loss) of the generator; real features are detached."""
    adv, fm = 0.0, 0.0
    for (_, feats_r), (lf, feats_f) in zip(real, fake):
        adv = adv + (F.relu(1 - lf).mean() if kind == "hinge" else (lf - 1).pow(2).mean())
        for fr, ff in zip(feats_r, feats_f):
            fm = fm + (fr.detach() - ff).abs().mean() / fr.detach().abs().mean().clamp(min=1e-5)
    n = len(real)
    return adv / n, fm / (n * len(real[0][1]))
