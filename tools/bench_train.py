"""Training throughput: seconds of audio per wall-clock second, ours against EnCodec's 24 kHz
architecture (the `encodec` package, random weights), same batch shape, same loss, one run.

    python tools/bench_train.py [--threads 2] [--steps 5] [--batch 8] [--seconds 1.0]

The loss for both is codec.losses.ReconstructionLoss (L1 + multi-scale mel + multi-resolution
STFT) plus the quantizer's commitment loss; AdamW step included. Prints figures, asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from codec.losses import LossWeights, ReconstructionLoss
from codec.model import Codec
from codec.recipe import load_recipe
from codec.runtime import keep_freed_memory


def step_seconds(forward, params, loss, batch: torch.Tensor, steps: int) -> float:
    """Median seconds per optimisation step (one warm-up step first)."""
    opt = torch.optim.AdamW(params, lr=1e-4)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        audio, extra = forward(batch)
        total, _ = loss(batch, audio, extra, 0)
        opt.zero_grad()
        total.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def ours(recipe: str):
    model = Codec(load_recipe(recipe).model).train()

    def forward(batch):
        out = model(batch)
        return out.audio, out.losses
    return model, forward


def encodec_24k():
    import encodec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = encodec.EncodecModel.encodec_model_24khz(pretrained=False).train()
    model.set_target_bandwidth(6.0)

    def forward(batch):
        emb = model.encoder(batch)
        q = model.quantizer(emb, model.frame_rate, model.bandwidth)
        return model.decoder(q.quantized)[..., :batch.shape[-1]], {"commitment": q.penalty}
    return model, forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/speech16k_rvq.toml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = keep_freed_memory()          # as the codec command does
    torch.manual_seed(0)
    rows = {}
    model, forward = ours(args.recipe)
    rate = model.sample_rate
    batch = torch.randn(args.batch, 1, int(args.seconds * rate)) * 0.1
    rows[f"ours ({args.recipe}, {rate} Hz)"] = step_seconds(
        forward, model.parameters(), ReconstructionLoss(rate, LossWeights()), batch, args.steps)
    try:
        model, forward = encodec_24k()
        batch = torch.randn(args.batch, 1, int(args.seconds * 24000)) * 0.1
        rows["EnCodec 24 kHz (random weights)"] = step_seconds(
            forward, model.parameters(), ReconstructionLoss(24000, LossWeights()), batch, args.steps)
    except ImportError:
        print("the encodec package is not installed (pip install '.[bench]'): measuring ours only")
    audio = args.batch * args.seconds
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, freed memory kept: {tuned}, batch {args.batch} x {args.seconds:g} s")
    for name, sec in rows.items():
        print(f"{name:>45}: {sec:.3f} s/step = {audio / sec:6.2f} s of audio per second")
    if len(rows) == 2:
        a, b = rows.values()
        print(f"throughput ratio ours / EnCodec: {b / a:.2f}x")


if __name__ == "__main__":
    main()
