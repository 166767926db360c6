"""A Euclidean codebook learned by k-means initialisation, EMA updates and dead-code reset.

State (buffers, all saved with the model):
    cluster_size (K,)    EMA of how many vectors each code was assigned
    embed_sum    (K, D)  EMA of the sum of those vectors
    embed        (K, D)  the codebook: embed_sum / laplace_smoothing(cluster_size) once initialised
    initialized  ()      whether k-means has run

Invariant kept after every training step (and tested): ``embed`` equals the EMA sums
divided by the Laplace-smoothed EMA counts. k-means initialisation writes counts and
sums that satisfy it, and a dead-code reset rewrites both the count and the sum of the
code it replaces, so the replacement is what the codebook holds after the step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from codec import distributed as dist


# ----------------------------------------------------------------------------- math helpers
def squared_distances(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """||x_n - e_k||^2 for x (N, D) and embed (K, D) -> (N, K)."""
    x_sq = x.pow(2).sum(1, keepdim=True)
    e_sq = embed.pow(2).sum(1)
    return torch.addmm(x_sq + e_sq, x, embed.t(), alpha=-2.0)


def nearest(x: torch.Tensor, embed: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code for each row of x (N, D) -> (N,)."""
    # argmin ||x - e||^2 = argmax (2 x.e - ||e||^2): one matmul, no (N, K) temporaries beyond it
    scores = torch.addmm(embed.pow(2).sum(1).neg(), x, embed.t(), alpha=2.0)
    return scores.argmax(dim=1)


def laplace_smoothing(counts: torch.Tensor, eps: float) -> torch.Tensor:
    """Counts with eps added to every code, rescaled to keep their total."""
    total = counts.sum()
    return (counts + eps) / (total + counts.numel() * eps) * total


def ema_inplace(average: torch.Tensor, new: torch.Tensor, decay: float) -> None:
    average.mul_(decay).add_(new, alpha=1.0 - decay)


def assignment_stats(x: torch.Tensor, codes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-code count (K,) and vector sum (K, D) of the rows of x (N, D) assigned by codes (N,)."""
    counts = torch.bincount(codes, minlength=size).to(x.dtype)
    sums = torch.zeros(size, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, codes, x)
    return counts, sums


def sample_vectors(x: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n rows of x (N, D): without replacement when N >= n, with replacement otherwise."""
    if x.shape[0] >= n:
        idx = torch.randperm(x.shape[0], device=x.device, generator=generator)[:n]
    else:
        idx = torch.randint(0, x.shape[0], (n,), device=x.device, generator=generator)
    return x[idx]


def kmeans(x: torch.Tensor, k: int, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on x (N, D) -> centroids (K, D), counts (K,). Empty clusters keep their old centroid."""
    centroids = sample_vectors(x, k)
    counts = torch.zeros(k, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        counts, sums = assignment_stats(x, nearest(x, centroids), k)
        filled = counts > 0
        centroids = torch.where(filled[:, None], sums / counts.clamp(min=1)[:, None], centroids)
    return centroids, counts


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code usage distribution given by counts (K,)."""
    p = counts / counts.sum().clamp(min=1e-12)
    return torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())


# ----------------------------------------------------------------------------- the codebook
@dataclass
class CodebookConfig:
    decay: float = 0.99                 # EMA decay of counts and sums
    eps: float = 1e-5                   # Laplace smoothing
    kmeans_iters: int = 50              # k-means iterations on the first training batch
    dead_threshold: float = 2.0         # a code whose EMA count falls below this is replaced


class EuclideanCodebook(nn.Module):
    """K codes of dimension D. ``forward`` assigns vectors and, in training, learns."""

    #: Buffers only training reads. An inference-only model file leaves them out (a third of
    #: an RVQ model's bytes); loading such a file rebuilds them, see _load_from_state_dict.
    TRAINING_ONLY = ("embed_sum",)

    def __init__(self, dim: int, size: int, cfg: CodebookConfig | None = None) -> None:
        super().__init__()
        self.dim, self.size = dim, size
        self.cfg = cfg or CodebookConfig()
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_sum", torch.zeros(size, dim))
        self.register_buffer("embed", torch.randn(size, dim))

    # -- inference ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, D) -> codes (N,)."""
        return nearest(x, self.embed)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (...) -> vectors (..., D)."""
        return nn.functional.embedding(codes, self.embed)

    # -- learning -------------------------------------------------------------------------
    @torch.no_grad()
    def init_kmeans(self, x: torch.Tensor) -> None:
        """Initialise from k-means on x (N, D): run on rank 0, broadcast, counted over all ranks."""
        x = x.float()
        if dist.rank() == 0:
            centroids, _ = kmeans(x, self.size, self.cfg.kmeans_iters)
        else:
            centroids = x.new_empty(self.size, self.dim)
        dist.broadcast_(centroids)
        counts, _ = assignment_stats(x, nearest(x, centroids), self.size)   # over every rank's vectors,
        self.cluster_size.copy_(dist.all_reduce_sum_(counts))              # as the EMA steps will count
        self.embed_sum.copy_(centroids * self._smoothed_counts()[:, None])
        self._refresh_embed()
        self.initialized.fill_(True)

    @torch.no_grad()
    def update(self, x: torch.Tensor, codes: torch.Tensor) -> int:
        """One EMA step on the vectors x (N, D) assigned to codes (N,); then reset dead codes.

        Returns the number of codes that were reset. All ranks end with identical state.
        """
        counts, sums = assignment_stats(x.float(), codes, self.size)
        ema_inplace(self.cluster_size, dist.all_reduce_sum_(counts), self.cfg.decay)
        ema_inplace(self.embed_sum, dist.all_reduce_sum_(sums), self.cfg.decay)
        self._refresh_embed()
        return self.reset_dead_codes(x)

    @torch.no_grad()
    def reset_dead_codes(self, x: torch.Tensor) -> int:
        """Replace every code with an EMA count under the threshold by a vector of the batch x (N, D).

        The replaced code's count is set to the threshold and its sum to vector * smoothed
        count, so ``embed`` keeps equalling sums / smoothed counts and holds the new vector.
        """
        dead = self.cluster_size < self.cfg.dead_threshold
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        # rank 0 draws the replacements; with no vectors there this step (per-sample dropout), none
        if not int(dist.broadcast_(torch.tensor(int(x.shape[0] > 0), device=x.device))):
            return 0
        local = sample_vectors(x.float(), n_dead) if x.shape[0] else x.new_empty(n_dead, self.dim)
        samples = dist.broadcast_(local.float().contiguous())
        self.cluster_size[dead] = self.cfg.dead_threshold
        self.embed_sum[dead] = samples * self._smoothed_counts()[dead][:, None]
        self._refresh_embed()
        self.embed[dead] = samples  # exact, not just up to the rounding of sum / count
        return n_dead

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Rebuild a missing ``embed_sum`` as embed * smoothed counts (the invariant above), so
        a model saved without it encodes, decodes and goes on training like the original."""
        key, embed, counts = prefix + "embed_sum", prefix + "embed", prefix + "cluster_size"
        if key not in state_dict and embed in state_dict and counts in state_dict:
            smoothed = laplace_smoothing(state_dict[counts].float(), self.cfg.eps)
            if state_dict[embed].shape[:1] == smoothed.shape:   # else strict loading names the mismatch
                state_dict[key] = state_dict[embed] * smoothed[:, None]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _smoothed_counts(self) -> torch.Tensor:
        return laplace_smoothing(self.cluster_size, self.cfg.eps)

    def _refresh_embed(self) -> None:
        self.embed.copy_(self.embed_sum / self._smoothed_counts()[:, None])

    # -- health ---------------------------------------------------------------------------
    def health(self) -> dict[str, float]:
        """Usage perplexity and number of dead codes, from the EMA counts."""
        return {"perplexity": float(perplexity(self.cluster_size)),
                "dead_codes": int((self.cluster_size < self.cfg.dead_threshold).sum())}
