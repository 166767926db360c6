"""Speed of the codec on this machine: encode/decode vs real time, and the RVQ against
vector-quantize-pytorch's ResidualVQ with the same configuration, side by side.

    python tools/bench_speed.py [--threads 2] [--seconds 10] [--repeats 5] [--models NAME_OR_DIR ...]

--models times trained models (bundled names or model directories) one after the other in one
process, so their figures share the machine's state; without it, the default architecture
(random weights). Each row gives the whole encode and decode and, apart, the encoder and
decoder networks alone. Prints measured figures only; nothing here asserts a target.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from codec import Codec, CodecConfig
from codec.runtime import keep_freed_memory
from codec.rvq import ResidualVQ


def timed(fn, repeats: int) -> float:
    """Median wall-clock seconds of fn() over repeats runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_codec(seconds: float, repeats: int, models: list[str]) -> None:
    import codec
    named = [(name, codec.load(name).eval()) for name in models] or [("default architecture", Codec(CodecConfig()).eval())]
    for name, model in named:
        wav = torch.randn(1, 1, int(seconds * model.sample_rate)) * 0.1
        with torch.inference_mode():
            codes = model.encode(wav)
            latent = model.encoder(wav[..., : codes.shape[-1] * model.hop_length])
            t_enc = timed(lambda: model.encode(wav), repeats)
            t_dec = timed(lambda: model.decode(codes), repeats)
            t_encoder = timed(lambda: model.encoder(wav[..., : latent.shape[-1] * model.hop_length]), repeats)
            t_decoder = timed(lambda: model.decoder(latent), repeats)
        params = {part: sum(p.numel() for p in getattr(model, part).parameters()) / 1e6 for part in ("encoder", "decoder")}
        print(f"{name} ({model.config.decoder} decoder; encoder {params['encoder']:.2f}M, decoder "
              f"{params['decoder']:.2f}M params; {seconds:g} s of {model.sample_rate} Hz audio): "
              f"encode {seconds / t_enc:.0f}x real time, decode {seconds / t_dec:.0f}x, "
              f"encode + decode {seconds / (t_enc + t_dec):.0f}x; networks alone: encoder {seconds / t_encoder:.0f}x, "
              f"decoder {seconds / t_decoder:.0f}x")


def rvq_steps(rvq, x: torch.Tensor, ours: bool):
    """(train_step, eval_step) closures for one quantizer on input x."""
    def train_step():
        xi = x.clone().requires_grad_()
        if ours:
            out = rvq(xi)
            loss = out.latent.square().mean() + out.losses["commitment"]
        else:
            quantized, _, commit = rvq(xi)
            loss = quantized.square().mean() + commit.sum()
        loss.backward()

    def eval_step():
        with torch.inference_mode():
            rvq(x)
    return train_step, eval_step


def bench_rvq(repeats: int) -> None:
    n_q, size, dim, batch, frames = 8, 1024, 128, 16, 750
    x = torch.randn(batch, dim, frames)
    ours = ResidualVQ(dim, n_q, size, dropout=False)
    rows = {"ours": rvq_steps(ours, x, True)}
    try:
        from vector_quantize_pytorch import ResidualVQ as LucidRVQ
        theirs = LucidRVQ(dim=dim, num_quantizers=n_q, codebook_size=size, decay=0.99, kmeans_init=True,
                          kmeans_iters=50, threshold_ema_dead_code=2, commitment_weight=1.0)
        rows["vector-quantize-pytorch"] = rvq_steps(theirs, x.transpose(1, 2).contiguous(), False)
    except ImportError:
        print("vector-quantize-pytorch is not installed (pip install '.[bench]'): comparing nothing")
    results = {}
    for name, (train_step, eval_step) in rows.items():
        for module in (ours if name == "ours" else theirs,):
            module.train()
            t_train = timed(train_step, repeats)
            module.eval()
            t_eval = timed(eval_step, repeats)
        results[name] = (t_train, t_eval)
        print(f"RVQ {name:>24}: train (fwd+bwd) {t_train * 1e3:7.1f} ms   eval {t_eval * 1e3:7.1f} ms")
    if len(results) == 2:
        (a_tr, a_ev), (b_tr, b_ev) = results["ours"], results["vector-quantize-pytorch"]
        print(f"speed-up of ours over vector-quantize-pytorch: train {b_tr / a_tr:.2f}x, eval {b_ev / a_ev:.2f}x "
              f"({n_q} codebooks x {size}, dim {dim}, batch {batch} x {frames} vectors)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", choices=["codec", "rvq"], default=None)
    parser.add_argument("--models", nargs="*", default=[], help="bundled model names or model directories")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    tuned = keep_freed_memory()          # as the codec command does
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, freed memory kept: {tuned}")
    if args.only in (None, "codec"):
        bench_codec(args.seconds, args.repeats, args.models)
    if args.only in (None, "rvq"):
        bench_rvq(args.repeats)


if __name__ == "__main__":
    main()
