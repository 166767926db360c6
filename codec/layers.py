"""Convolution building blocks shared by the SEANet encoder and decoder.

Every convolution here keeps an exact length contract so that the model can
promise ``decode(encode(x))`` returns ``x``'s length:

* ``Conv1d`` with stride ``s`` maps a length ``L`` that is a multiple of ``s``
  to exactly ``L // s`` (stride 1: to ``L``). It pads ``k - s`` samples in total
  (dilated kernels: ``(k - 1) * d + 1 - s``), all on the left in causal mode,
  split evenly (extra sample on the left) otherwise.
* ``ConvTranspose1d`` with stride ``s`` maps ``L`` to exactly ``L * s`` by
  trimming ``k - s`` samples: all on the right in causal mode (so no output
  sample sees a later input frame), split evenly otherwise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


def split_padding(total: int, causal: bool) -> tuple[int, int]:
    """(left, right) split of ``total`` padding or trimming samples."""
    if causal:
        return total, 0
    right = total // 2
    return total - right, right


class Conv1d(nn.Module):
    """Weight-normalised 1-d convolution with length-exact padding. (B, C_in, L) -> (B, C_out, L // stride)"""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, causal: bool = False) -> None:
        super().__init__()
        self.conv = weight_norm(nn.Conv1d(in_ch, out_ch, kernel_size, stride=stride, dilation=dilation))
        effective_kernel = (kernel_size - 1) * dilation + 1
        self.padding = split_padding(max(effective_kernel - stride, 0), causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.padding))


class ConvTranspose1d(nn.Module):
    """Weight-normalised transposed convolution. (B, C_in, L) -> (B, C_out, L * stride)"""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int, causal: bool = False) -> None:
        super().__init__()
        self.conv = weight_norm(nn.ConvTranspose1d(in_ch, out_ch, kernel_size, stride=stride))
        right, left = split_padding(kernel_size - stride, causal)   # causal: trim only on the right
        self.trim = (left, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        left, right = self.trim
        return y[..., left:y.shape[-1] - right]


class Snake(nn.Module):
    """Snake activation x + sin^2(alpha x) / alpha with a learned alpha per channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.sin(self.alpha * x).pow(2) / (self.alpha + 1e-9)


def _elu(x: torch.Tensor) -> torch.Tensor:
    """ELU (alpha 1) in three in-place steps on one new tensor."""
    return x.clamp(max=0).exp_().sub_(1).add_(x.clamp(min=0))


class _ELUFunction(torch.autograd.Function):
    """ELU whose backward uses its output: d/dx = 1 for x > 0, exp(x) = y + 1 otherwise."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = _elu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return grad * y.clamp(max=0).add_(1)


class ELU(nn.Module):
    """ELU(x) = x for x > 0, exp(x) - 1 otherwise: the same function as ``nn.ELU()``.

    Written with clamp and exp, and with a backward from the output, because PyTorch's CPU
    ELU kernel is several times slower than exp and autograd through the pieces is slower
    still (measured with tools/bench_speed.py and tools/bench_train.py).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ELUFunction.apply(x) if torch.is_grad_enabled() and x.requires_grad else _elu(x)


def activation(name: str, channels: int) -> nn.Module:
    if name == "elu":
        return ELU()
    if name == "snake":
        return Snake(channels)
    raise ValueError(f"unknown activation {name!r}; expected 'elu' or 'snake'")


class ResidualUnit(nn.Module):
    """SEANet residual unit: act -> dilated conv (k) -> act -> 1x1 conv, plus the input. (B, C, L) -> (B, C, L)"""

    def __init__(self, channels: int, dilation: int, kernel_size: int = 3, compress: int = 2,
                 act: str = "elu", causal: bool = False) -> None:
        super().__init__()
        hidden = channels // compress
        self.block = nn.Sequential(
            activation(act, channels),
            Conv1d(channels, hidden, kernel_size, dilation=dilation, causal=causal),
            activation(act, hidden),
            Conv1d(hidden, channels, 1, causal=causal),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)
