"""How many bits a context model could save on a model's token files: held-out cross-entropy.

    python tools/context_probe.py --manifest data/manifest.csv --model speech16k --epochs 3

Encodes the manifest's training clips (split "train", real speech; --languages selects) and its
evaluation clips (--eval-split, default "heldout": voices no recipe trains on) at every
codebook, then fits three models of the codes on the training clips only and prints each one's
cross-entropy on the evaluation clips in bits per frame, against the nominal n_q * log2(K):

* unigram: one distribution per codebook (what token files use today), Laplace-smoothed;
* class context: per codebook, the distribution given a class of the previous frame's code in
  that codebook (k-means of the codebook's vectors into --classes classes), interpolated with
  the unigram;
* MLP context: a small network over the embeddings of all the previous frame's codes and the
  current frame's earlier stages, trained for --epochs with Adam; the best epoch on the
  evaluation clips is reported, so the figure is an optimistic bound for this network size.

Prints measured figures only; writes nothing.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402
from codec.audio import load_audio, resample  # noqa: E402


def encode_clips(model, root: Path, rows: list[dict]) -> list[np.ndarray]:
    out = []
    for row in rows:
        wav, rate = load_audio(root / row["path"])
        wav = resample(wav.mean(0, keepdim=True), rate, model.sample_rate)[None]
        with torch.inference_mode():
            out.append(model.encode(wav, n_q=model.n_q)[0].numpy().astype(np.int64))   # (n_q, F)
    return out


def unigram_bits(train: list[np.ndarray], test: list[np.ndarray], size: int) -> float:
    a, b = np.concatenate(train, 1), np.concatenate(test, 1)
    total = 0.0
    for q in range(a.shape[0]):
        p = np.bincount(a[q], minlength=size) + 1.0
        total += -np.log2(p[b[q]] / p.sum()).sum()
    return total / b.shape[1]


def kmeans_labels(x: np.ndarray, k: int, iters: int = 30, seed: int = 0) -> np.ndarray:
    centres = x[np.random.default_rng(seed).choice(len(x), k, replace=False)].copy()
    for _ in range(iters):
        labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if (labels == j).any():
                centres[j] = x[labels == j].mean(0)
    return labels


def previous(clips: list[np.ndarray]) -> np.ndarray:
    """The previous frame's codes (the first frame repeats itself), clip by clip."""
    return np.concatenate([np.concatenate([c[:, :1], c[:, :-1]], 1) for c in clips], 1)


def class_bits(model, train, test, size: int, classes: int, weight: float = 20.0) -> float:
    a, b, pa, pb = np.concatenate(train, 1), np.concatenate(test, 1), previous(train), previous(test)
    total = 0.0
    for q in range(a.shape[0]):
        labels = kmeans_labels(model.bottleneck.layers[q].codebook.embed.detach().double().numpy(), classes)
        uni = np.bincount(a[q], minlength=size) + 1.0
        uni /= uni.sum()
        table = np.zeros((classes, size))
        np.add.at(table, (labels[pa[q]], a[q]), 1.0)
        p = (table + weight * size * uni) / (table.sum(1, keepdims=True) + weight * size)
        total += -np.log2(p[labels[pb[q]], b[q]]).sum()
    return total / b.shape[1]


class ContextMLP(torch.nn.Module):
    """logits of code q at frame t from the codes of frame t - 1 and the codes of stages < q at t."""

    def __init__(self, n_q: int, size: int, dim: int) -> None:
        super().__init__()
        self.n_q, self.size = n_q, size
        self.prev = torch.nn.Embedding(n_q * (size + 1), dim)
        self.cur = torch.nn.Embedding(n_q * size, dim)
        self.mlp = torch.nn.Sequential(torch.nn.GELU(), torch.nn.Linear(dim, dim), torch.nn.GELU())
        self.out = torch.nn.Parameter(torch.randn(n_q, dim, size) * 0.02)
        self.bias = torch.nn.Parameter(torch.zeros(n_q, size))

    def forward(self, cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:   # (B, n_q) -> (B, n_q, K)
        stages = torch.arange(self.n_q)
        h_prev = self.prev(prev + stages * (self.size + 1)).sum(1, keepdim=True)
        e_cur = self.cur(cur + stages * self.size)
        h = self.mlp(h_prev + torch.cumsum(e_cur, 1) - e_cur)
        return torch.einsum("bqd,qdk->bqk", h, self.out) + self.bias


def frame_pairs(clips: list[np.ndarray], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    cur = torch.from_numpy(np.concatenate(clips, 1)).T.contiguous()
    prev = [np.concatenate([np.full((c.shape[0], 1), size), c[:, :-1]], 1) for c in clips]   # size: clip start
    return cur, torch.from_numpy(np.concatenate(prev, 1)).T.contiguous()


def mlp_bits(train, test, n_q: int, size: int, dim: int, epochs: int) -> list[float]:
    torch.manual_seed(0)
    (tc, tp), (ec, ep) = frame_pairs(train, size), frame_pairs(test, size)
    net = ContextMLP(n_q, size, dim)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    per_epoch = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for idx in torch.randperm(len(tc)).split(512):
            loss = torch.nn.functional.cross_entropy(net(tc[idx], tp[idx]).reshape(-1, size), tc[idx].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            nats = sum(-torch.log_softmax(net(c, p), -1).gather(-1, c[..., None]).sum().item()
                       for c, p in zip(ec.split(4096), ep.split(4096)))
        per_epoch.append(nats / math.log(2) / len(ec))
        print(f"  MLP epoch {epoch + 1}: {per_epoch[-1]:.1f} bits/frame ({time.perf_counter() - t0:.0f} s)", flush=True)
    return per_epoch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, default=Path("data/manifest.csv"))
    parser.add_argument("--model", default="speech16k")
    parser.add_argument("--languages", default="en,es,fr", help="training clips' languages ('' = all)")
    parser.add_argument("--eval-split", default="heldout")
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.manifest.is_file():
        print(f"context_probe: error: no manifest at {args.manifest} (build one with tools/make_corpus.py)",
              file=sys.stderr)
        return 1
    model = codec.load(args.model).eval()
    if not model.is_quantized:
        print(f"context_probe: error: {args.model} has no codes", file=sys.stderr)
        return 1
    rows = list(csv.DictReader(args.manifest.open(newline="")))
    languages = {x for x in args.languages.split(",") if x}
    train_rows = [r for r in rows if r["split"] == "train" and r["kind"] == "speech" and r.get("synthetic") != "1"
                  and (not languages or r["language"] in languages)]
    eval_rows = [r for r in rows if r["split"] == args.eval_split]
    if not train_rows or not eval_rows:
        print("context_probe: error: the manifest has no training or no evaluation clips", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    train = encode_clips(model, args.manifest.parent, train_rows)
    test = encode_clips(model, args.manifest.parent, eval_rows)
    frames = sum(c.shape[1] for c in train)
    size, n_q = model.codebook_size, model.n_q
    nominal = n_q * math.log2(size)
    print(f"{args.model}, {n_q} codebooks of {size}: {frames} training frames ({len(train)} clips), "
          f"{sum(c.shape[1] for c in test)} '{args.eval_split}' frames ({len(test)} clips); "
          f"encoded in {time.perf_counter() - t0:.0f} s; nominal {nominal:.0f} bits/frame")
    for name, bits in [("unigram", unigram_bits(train, test, size)),
                       (f"class context ({args.classes} classes)", class_bits(model, train, test, size, args.classes))]:
        print(f"{name}: {bits:.1f} bits/frame = {bits / nominal:.1%} of nominal", flush=True)
    best = min(mlp_bits(train, test, n_q, size, args.dim, args.epochs))
    print(f"MLP context (dim {args.dim}), best epoch: {best:.1f} bits/frame = {best / nominal:.1%} of nominal")
    return 0


if __name__ == "__main__":
    sys.exit(main())
