"""The codec: encoder -> bottleneck -> decoder, and its token API.

The encoder and decoder are chosen per model. ``CodecConfig.encoder``: "seanet", strided
convolutions at the sample rate (``codec.seanet``), or "frame", a strided stem into ConvNeXt
blocks at the frame rate (``codec.convnext``). ``CodecConfig.decoder``: "seanet", the mirror
image of the SEANet encoder with transposed convolutions, or "istft", ConvNeXt blocks at the
frame rate and an inverse STFT (``codec.istft``). Both encoders map F * hop_length samples to
F frames and both decoders F frames to F * hop_length samples; ``seanet`` sets hop_length
(the product of its strides), latent_dim and channels for every choice.

Lengths and padding. The encoder needs a length that is a multiple of ``hop_length``
(= prod(strides), 320 by default). ``encode`` pads the input on the right with zeros to
``frames * hop_length`` samples, ``frames = ceil(T / hop_length)``, and records the original
length ``T`` on the returned tensor as ``codes.num_samples``. ``decode`` produces
``frames * hop_length`` samples and trims them to ``length`` (argument), else to
``codes.num_samples`` when present, so ``decode(encode(x))`` has exactly x's length.
``forward`` does the same padding and trimming, so a training step sees any length.
"""
from __future__ import annotations

import math
from pathlib import Path
from dataclasses import asdict, dataclass, field, fields
from typing import get_type_hints

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from codec.audio import MAX_SAMPLE_RATE
from codec.bottleneck import AEBottleneck, BottleneckOutput, VAEBottleneck
from codec.codebook import CodebookConfig
from codec.convnext import FrameEncoder, FrameEncoderConfig
from codec.istft import ISTFTConfig, ISTFTDecoder
from codec.rvq import ResidualVQ
from codec.seanet import SEANetConfig, SEANetDecoder, SEANetEncoder

BOTTLENECKS = ("ae", "vae", "vq", "rvq")
ENCODERS = ("seanet", "frame")
DECODERS = ("seanet", "istft")


@dataclass
class CodecConfig:
    bottleneck: str = "rvq"                 # "ae", "vae", "vq" (one codebook) or "rvq"
    sample_rate: int = 16000
    n_q: int = 8                            # codebooks ("vq": always 1)
    codebook_size: int = 1024
    codebook_dim: int = 0                   # vq/rvq: > 0 factorises the codes (looked up in this many dims)
    name: str = "codec"
    seanet: SEANetConfig = field(default_factory=SEANetConfig)   # hop, latent and channels; the SEANet layers
    encoder: str = "seanet"                 # "seanet" (strided convolutions) or "frame" (stem + ConvNeXt blocks)
    frame_encoder: FrameEncoderConfig = field(default_factory=FrameEncoderConfig)   # the "frame" encoder's sizes
    decoder: str = "seanet"                 # "seanet" (transposed convolutions) or "istft" (frame rate + iSTFT)
    istft: ISTFTConfig = field(default_factory=ISTFTConfig)      # the "istft" decoder's sizes
    codebook: CodebookConfig = field(default_factory=CodebookConfig)
    quantizer_dropout: bool = True          # rvq: train with 1..n_q codebooks drawn per batch
    dropout_per_sample: bool = False        # rvq: draw per sample instead of per batch
    quantizer_dropout_p: float = 1.0        # rvq: share of batches (samples) that draw 1..n_q; the rest use all
    quantizer_bypass_p: float = 0.0         # vq/rvq: share of training samples decoded from the unquantised latent
    ae_float_bits: int = 32                 # ae: width of the stored floats
    vae_free_bits: float = 0.0              # vae: KL floor per latent dimension (nats per frame); 0 = off

    def __post_init__(self) -> None:
        if isinstance(self.seanet, dict):
            self.seanet = config_from_dict(SEANetConfig, self.seanet)
        if isinstance(self.codebook, dict):
            self.codebook = config_from_dict(CodebookConfig, self.codebook)
        if isinstance(self.istft, dict):
            self.istft = config_from_dict(ISTFTConfig, self.istft)
        if isinstance(self.frame_encoder, dict):
            self.frame_encoder = config_from_dict(FrameEncoderConfig, self.frame_encoder)
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder == "frame" and self.seanet.causal:
            raise ValueError("the frame encoder is not causal: its blocks read later frames; "
                             "use encoder = \"seanet\" with seanet.causal = true")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {self.decoder!r}")
        if self.decoder == "istft" and self.seanet.causal:
            raise ValueError("the istft decoder is not causal: its windows reach into later frames; "
                             "use decoder = \"seanet\" with seanet.causal = true")
        if self.bottleneck not in BOTTLENECKS:
            raise ValueError(f"bottleneck must be one of {BOTTLENECKS}, got {self.bottleneck!r}")
        if self.bottleneck == "vq":
            self.n_q = 1
        if self.n_q < 1 or self.codebook_size < 2:
            raise ValueError(f"need n_q >= 1 and codebook_size >= 2, got {self.n_q} and {self.codebook_size}")
        for name in ("quantizer_dropout_p", "quantizer_bypass_p"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be from 0 to 1, got {p!r}")
        if self.codebook_dim < 0:
            raise ValueError(f"codebook_dim must be >= 0 (0: codes of the latent's dimension), got {self.codebook_dim}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CodecConfig":
        """From a config.json or a recipe's [model] table; every field type- and range-checked."""
        return config_from_dict(cls, data, checked=True)


# Ranges of the numeric fields of the model's configs, by field name; an int field not listed
# here must lie in [1, MAX_SIZE]. They keep a tampered config.json from building a model that
# cannot exist (zero or negative sizes, or widths that need more memory than any machine has).
MAX_SIZE = 1 << 16
_RANGES: dict[str, tuple[float, float]] = {
    "sample_rate": (1, MAX_SAMPLE_RATE),
    "codebook_size": (2, 1 << 20),            # the token format's limit
    "codebook_dim": (0, MAX_SIZE),
    "kmeans_iters": (0, 10_000),
    "decay": (0.0, 1.0),
    "eps": (0.0, 1.0),
    "dead_threshold": (0.0, 1e9),
    "quantizer_dropout_p": (0.0, 1.0),
    "quantizer_bypass_p": (0.0, 1.0),
    "vae_free_bits": (0.0, 1e3),
}


def _checked(owner: str, name: str, kind, value):
    """``value`` as field ``name`` of type ``kind`` needs it (lists -> tuples), else ValueError."""
    where = f"{owner}.{name}"
    if isinstance(kind, type) and hasattr(kind, "__dataclass_fields__"):
        if isinstance(value, kind):
            return value
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a table of {kind.__name__} fields, got {type(value).__name__}")
        return config_from_dict(kind, value, checked=True)
    if getattr(kind, "__origin__", None) is tuple:               # tuple[int, ...]
        if not isinstance(value, (list, tuple)) or len(value) > MAX_SIZE:
            raise ValueError(f"{where} must be a list, got {value!r:.80}")
        return tuple(_checked(owner, name, kind.__args__[0], v) for v in value)
    if kind is bool or kind is str:
        if type(value) is not kind:
            raise ValueError(f"{where} must be {'true or false' if kind is bool else 'a string'}, got {value!r:.80}")
        return value
    if kind is int and (type(value) is not int) or kind is float and type(value) not in (int, float):
        raise ValueError(f"{where} must be {'an integer' if kind is int else 'a number'}, got {value!r:.80}")
    low, high = _RANGES.get(name, (1, MAX_SIZE))
    if not low <= value <= high:                                  # NaN fails too
        raise ValueError(f"{where} must be from {low} to {high}, got {value!r}")
    return value


def config_from_dict(cls, data: dict, checked: bool = False):
    """Build the config dataclass ``cls`` from a dict (TOML/JSON): unknown keys are an error and
    lists become tuples. checked (the model's configs, nested ones included): every value must
    also have its field's type and lie in its range (_RANGES), or ValueError."""
    if not isinstance(data, dict):
        raise ValueError(f"a {cls.__name__} must be a table of fields, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    if not checked:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
    hints = get_type_hints(cls)
    return cls(**{k: _checked(cls.__name__, k, hints[k], v) for k, v in data.items()})


@dataclass
class CodecOutput:
    audio: torch.Tensor                 # (B, C, T) reconstruction, same length as the input
    losses: dict[str, torch.Tensor]     # bottleneck loss terms (commitment, kl)
    codes: torch.Tensor | None          # (B, n_q, F) for quantizers
    bits_per_frame: torch.Tensor        # scalar
    metrics: dict[str, float]


def make_encoder(cfg: CodecConfig) -> nn.Module:
    if cfg.encoder == "frame":
        return FrameEncoder(cfg.seanet.channels, cfg.seanet.latent_dim, cfg.seanet.hop_length, cfg.frame_encoder)
    return SEANetEncoder(cfg.seanet)


def make_decoder(cfg: CodecConfig) -> nn.Module:
    if cfg.decoder == "istft":
        return ISTFTDecoder(cfg.seanet.latent_dim, cfg.seanet.channels, cfg.seanet.hop_length, cfg.istft)
    return SEANetDecoder(cfg.seanet)


def make_bottleneck(cfg: CodecConfig) -> nn.Module:
    dim = cfg.seanet.latent_dim
    if cfg.bottleneck == "ae":
        return AEBottleneck(dim, cfg.ae_float_bits)
    if cfg.bottleneck == "vae":
        return VAEBottleneck(dim, cfg.vae_free_bits)
    return ResidualVQ(dim, cfg.n_q, cfg.codebook_size, cfg.codebook,
                      dropout=cfg.quantizer_dropout and cfg.n_q > 1,
                      dropout_per_sample=cfg.dropout_per_sample, codebook_dim=cfg.codebook_dim,
                      dropout_p=cfg.quantizer_dropout_p, bypass_p=cfg.quantizer_bypass_p)


class Codec(nn.Module):
    def __init__(self, config: CodecConfig | None = None) -> None:
        super().__init__()
        self.config = config or CodecConfig()
        self.encoder = make_encoder(self.config)
        self.bottleneck = make_bottleneck(self.config)
        self.decoder = make_decoder(self.config)
        # Per-codebook symbol counts over the training data, for entropy-coding token files.
        self.register_buffer("symbol_counts", torch.zeros(self.config.n_q, self.config.codebook_size,
                                                          dtype=torch.int64))

    # -- description -----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def channels(self) -> int:
        return self.config.seanet.channels

    @property
    def hop_length(self) -> int:
        return self.config.seanet.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def n_q(self) -> int:
        return self.config.n_q

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def is_quantized(self) -> bool:
        return self.config.bottleneck in ("vq", "rvq")

    def bitrate(self, n_q: int | None = None) -> float:
        """Nominal bits per second: n_q * log2(codebook_size) * frame_rate (AE: float width * dim)."""
        if self.config.bottleneck == "ae":
            return self.config.ae_float_bits * self.config.seanet.latent_dim * self.frame_rate
        if self.config.bottleneck == "vae":
            raise ValueError("a VAE has no nominal bitrate: its rate is KL / ln 2, see forward(...).bits_per_frame")
        n_q = self.bottleneck.check_n_q(n_q)
        return n_q * math.log2(self.codebook_size) * self.frame_rate

    def frames(self, num_samples: int) -> int:
        return -(-num_samples // self.hop_length)

    # -- training --------------------------------------------------------------------------
    def forward(self, wav: torch.Tensor, n_q: int | None = None) -> CodecOutput:
        """wav (B, C, T) -> reconstruction (B, C, T) with the bottleneck's losses, codes and rate."""
        padded, length = self.pad_to_frames(wav)
        h = self.encoder(padded)
        out: BottleneckOutput = self.bottleneck(h, n_q) if self.is_quantized else self.bottleneck(h)
        audio = self.decoder(out.latent)[..., :length]
        return CodecOutput(audio, out.losses, out.codes, out.bits_per_frame, out.metrics)

    # -- tokens ----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, wav: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        """wav (B, C, T) at ``sample_rate`` -> codes LongTensor (B, n_q, F), F = ceil(T / hop_length).

        For the "ae" and "vae" baselines this returns the continuous latent (B, D, F) instead
        (AE: rounded to its stored float width; VAE: the posterior mean). The original length
        is recorded as ``result.num_samples``.
        """
        padded, length = self.pad_to_frames(wav)
        with parametrize.cached():              # weight norm computed once per call, not per layer use
            h = self.encoder(padded)
        result = self.bottleneck.encode(h, n_q) if self.is_quantized else self.bottleneck.encode(h)
        result.num_samples = length
        return result

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """codes (B, n, F) -> wav (B, C, T). T = length, else codes.num_samples, else F * hop_length.

        For "ae"/"vae" models, ``codes`` is the continuous latent (B, D, F) from ``encode``.
        """
        if self.is_quantized and codes.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"codes must be an integer tensor, got {codes.dtype}")
        if self.is_quantized and codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size}), got [{int(codes.min())}, {int(codes.max())}]")
        latent = self.bottleneck.decode(codes.long() if self.is_quantized else codes)
        with parametrize.cached():
            audio = self.decoder(latent)
        length = getattr(codes, "num_samples", None) if length is None else length
        return audio if length is None else audio[..., :length]

    def pad_to_frames(self, wav: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Check wav (B, C, T) and zero-pad it on the right to whole frames -> (padded, T)."""
        if wav.dim() != 3 or wav.shape[1] != self.channels:
            raise ValueError(f"expected audio of shape (batch, {self.channels}, samples), got {tuple(wav.shape)}")
        length = wav.shape[-1]
        if length == 0:
            raise ValueError("cannot encode zero-length audio")
        return F.pad(wav, (0, self.frames(length) * self.hop_length - length)), length

    # -- files -----------------------------------------------------------------------------
    def save(self, directory, inference_only: bool = False) -> Path:
        """Write ``model.safetensors`` and ``config.json`` into ``directory``; returns the directory.

        inference_only leaves out the buffers only training reads (``training_only_keys``);
        loading rebuilds them, and the fingerprint is the same either way.
        """
        from codec.checkpoint import save_model
        return save_model(self, directory, inference_only)

    def training_only_keys(self) -> list[str]:
        """State-dict keys that encoding and decoding never read (the codebooks' EMA sums)."""
        return [f"{name}.{buffer}" for name, module in self.named_modules()
                for buffer in getattr(module, "TRAINING_ONLY", ())]

    def fingerprint(self) -> str:
        """Short hex digest of the weights and buffers that decoding depends on: names a model
        in token files (the training-only EMA sums are left out, so an inference-only copy of
        a model has the same fingerprint)."""
        from codec.checkpoint import state_fingerprint
        skip = set(self.training_only_keys())
        return state_fingerprint({k: v for k, v in self.state_dict().items() if k not in skip})

    def full_fingerprint(self) -> str:
        """Digest of every weight and buffer, training-only ones included: what ``fingerprint``
        was before inference-only files existed (token files written then carry it), and what
        DDP ranks compare (with the discriminator's weights, when training has one)."""
        from codec.checkpoint import state_fingerprint
        return state_fingerprint(self.state_dict())
