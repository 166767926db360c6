"""Token files in numbers: actual vs nominal bitrate on real speech, header overhead, and the
wall time and peak memory of encoding and decoding a one-hour file in chunks.

    OMP_NUM_THREADS=1 python tools/bench_tokens.py [--model NAME|PATH] [--hours 1]
        [--chunk-frames 250] [--stereo-44k-minutes 0]

Without --model it uses the bundled "speech16k" when installed, else a stand-in: the default
architecture with random weights, its codebooks k-means-initialised and its symbol statistics
gathered on the Spanish and French example clips (as training would), measured on the English
one. The stand-in's figures show the container's overhead and the chunked pipeline's cost, not
a trained codec's compression.

The long file is real speech (the bundled clips tiled with random gains and a little noise).
Every step runs in a fresh process started by this small one, which never imports torch:
on Linux a process's getrusage ru_maxrss starts from its parent's peak (it is carried across
fork and exec), so only a small parent lets ru_maxrss show the child's own peak. VmHWM from
/proc/self/status, the peak of the process's own memory, is printed beside it. Prints
figures only; nothing here asserts a target.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "codec" / "assets"
CLIPS = [ASSETS / n for n in ("example_speech.wav", "example_speech_es.wav", "example_speech_fr.wav")]


# ---------------------------------------------------------------- steps (each in its own process)
def step_model(given: str, folder: Path) -> None:
    """Pick the model (given, bundled speech16k, or a stand-in saved in folder); print the bitrate table."""
    import torch
    import codec
    from codec.audio import load_audio
    from codec.entropy import count_symbols
    from codec.pretrained import available, resolve

    if given:
        path = resolve(given)
    elif "speech16k" in available():
        path = resolve("speech16k")
    else:
        print("speech16k is not installed: using a stand-in (default architecture, random weights, "
              "codebooks and symbol statistics from the es/fr clips, measured on the en clip)")
        torch.manual_seed(0)
        model = codec.Codec(codec.CodecConfig(quantizer_dropout=False))
        wavs = [load_audio(p)[0] for p in CLIPS[1:]]
        model.train()(torch.stack([w[:, i * 16000:(i + 1) * 16000] for w in wavs for i in range(3)]))
        model.eval()
        for wav in wavs:
            codes = model.encode(wav[None])
            model.symbol_counts += torch.from_numpy(count_symbols(codes.numpy(), model.codebook_size))
        path = model.save(folder / "stand-in")
    (folder / "model.txt").write_text(str(path))
    bitrate_table(Path(path), CLIPS[0], folder)


def bitrate_table(model_path: Path, clip: Path, folder: Path) -> None:
    import soundfile as sf
    import codec

    model = codec.load(model_path)
    duration = sf.info(str(clip)).duration
    coding = "entropy-coded" if int(model.symbol_counts.sum()) else "bit-packed (no symbol statistics)"
    print(f"\nbitrate on real speech: {clip.name} ({duration:.2f} s, 16 kHz mono), model {model_path.name}, {coding}")
    print(f"{'n_q':>4} {'nominal bps':>12} {'payload bps':>12} {'actual bps':>11} {'payload/nominal':>16} "
          f"{'file bytes':>11} {'overhead bytes':>15}")
    for n_q in range(1, model.n_q + 1):
        out = folder / f"nq{n_q}.rvqt"
        codec.encode_file(clip, out, model=model_path, n_q=n_q, force=True)
        size, payload = out.stat().st_size, payload_bytes(out)
        print(f"{n_q:>4} {model.bitrate(n_q):>12.0f} {payload * 8 / duration:>12.0f} {size * 8 / duration:>11.0f} "
              f"{payload * 8 / duration / model.bitrate(n_q):>16.3f} {size:>11} {size - payload:>15}")
    print(f"overhead = 9 bytes of framing (magic, version, CRC32) + the binary header "
          f"(of which {len(str(model_path).encode())} bytes are the model's path)")


def payload_bytes(path: Path) -> int:
    """Length of a token file's payload (its checked header and framing left out)."""
    from codec.tokenfile import token_payload

    return len(token_payload(path.read_bytes()))


def step_make_long(path: Path, seconds: float, sample_rate: int, channels: int) -> None:
    """Real speech clips tiled with random gains and a little noise, written block by block."""
    import numpy as np
    import soundfile as sf
    from codec.audio import load_audio, resample

    rng = np.random.default_rng(0)
    clips = [resample(load_audio(p)[0], 16000, sample_rate)[0].numpy() for p in CLIPS]
    total = int(seconds * sample_rate)
    with sf.SoundFile(path, "w", sample_rate, channels, "PCM_16") as f:
        written = 0
        while written < total:
            picked = [clips[rng.integers(3)] * rng.uniform(0.3, 1.0) for _ in range(channels)]
            block = np.stack([c[:min(map(len, picked))] for c in picked], axis=1)      # (t, channels)
            block = block + rng.normal(0, 0.003, size=block.shape)
            block = block[:total - written]
            f.write(np.clip(block, -1, 1).astype(np.float32))
            written += len(block)


def step_code(command: str, source: str, target: str, model: str, chunk_frames: int, result: Path) -> None:
    """One encode or decode; writes wall time and peak memory to ``result`` as JSON."""
    import resource
    import time
    import codec

    before = vm_hwm_mib()
    t0 = time.perf_counter()
    if command == "encode":
        codec.encode_file(source, target, model=model, force=True, chunk_frames=chunk_frames)
    else:
        codec.decode_file(source, target, model=model, force=True, chunk_frames=chunk_frames)
    wall = time.perf_counter() - t0
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # KiB on Linux
    result.write_text(json.dumps({"wall_s": wall, "maxrss_mib": maxrss, "hwm_mib": vm_hwm_mib(),
                                  "before_mib": before}))


def vm_hwm_mib() -> float:
    """Peak resident memory of this process's own address space (Linux), else NaN."""
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.is_file() else []:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


STEPS = {
    "model": lambda a: step_model(a[0], Path(a[1])),
    "make-long": lambda a: step_make_long(Path(a[0]), float(a[1]), int(a[2]), int(a[3])),
    "code": lambda a: step_code(a[0], a[1], a[2], a[3], int(a[4]), Path(a[5])),
}


# ---------------------------------------------------------------- the small parent
def step(*args) -> None:
    subprocess.run([sys.executable, __file__, "--step", *map(str, args)], check=True)


def long_file(model: str, folder: Path, seconds: float, rate: int, channels: int, chunk_frames: int) -> None:
    wav, tokens, back = folder / "long.wav", folder / "long.rvqt", folder / "long_back.wav"
    step("make-long", wav, seconds, rate, channels)
    print(f"\n{seconds / 3600:g} h of {rate} Hz {channels}-channel speech ({wav.stat().st_size / 2**20:.0f} MiB "
          f"PCM16 WAV), chunks of {chunk_frames} frames")
    for command, source, target in (("encode", wav, tokens), ("decode", tokens, back)):
        step("code", command, source, target, model, chunk_frames, folder / "result.json")
        r = json.loads((folder / "result.json").read_text())
        print(f"  {command}: {r['wall_s']:.1f} s wall ({seconds / r['wall_s']:.0f}x real time), peak memory: "
              f"getrusage ru_maxrss {r['maxrss_mib']:.0f} MiB, VmHWM {r['hwm_mib']:.0f} MiB "
              f"({r['before_mib']:.0f} MiB before the call: Python, torch and codec imported)")
    size = tokens.stat().st_size
    print(f"  token file {size / 1024:.0f} KiB = {size * 8 / seconds:.0f} bit/s; decoded file "
          f"{back.stat().st_size / 2**20:.0f} MiB, same size as the input: {back.stat().st_size == wav.stat().st_size}")
    for p in (wav, tokens, back):
        p.unlink()


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--step":
        return STEPS[sys.argv[2]](sys.argv[3:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="", help="bundled name or model path (default: speech16k, else a stand-in)")
    parser.add_argument("--hours", type=float, default=1.0, help="length of the long 16 kHz mono file (0: skip)")
    parser.add_argument("--chunk-frames", type=int, default=250)
    parser.add_argument("--stereo-44k-minutes", type=float, default=0.0,
                        help="also time a 44.1 kHz stereo file this long (0: skip)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        step("model", args.model, folder)
        model = (folder / "model.txt").read_text()
        if args.hours > 0:
            long_file(model, folder, args.hours * 3600, 16000, 1, args.chunk_frames)
        if args.stereo_44k_minutes > 0:
            long_file(model, folder, args.stereo_44k_minutes * 60, 44100, 2, args.chunk_frames)


if __name__ == "__main__":
    main()
