"""Copy a trained model into the package as a bundled model, inference-only and checked.

    python tools/ship_model.py runs/speech16k/model speech16k [--force]

Writes ``codec/pretrained/NAME/`` without the codebooks' EMA sums (training-only; loading
rebuilds them, so ``train.init_from = "NAME"`` still works), then checks that the copy has the
source's fingerprint and gives bit-identical codes and audio on the bundled example clip. The
folder is assembled beside its destination and renamed into place, so a failure leaves the
previous bundled model as it was.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a trained model directory (e.g. runs/speech16k/model)")
    parser.add_argument("name", help="bundled name, a folder under codec/pretrained/")
    parser.add_argument("--force", action="store_true", help="replace a bundled model of that name")
    args = parser.parse_args(argv)

    import torch

    import codec
    from codec.audio import load_audio, resample
    from codec.checkpoint import WEIGHTS, CheckpointError
    from codec.pretrained import PRETRAINED_DIR

    if not args.name or "/" in args.name or args.name.startswith("."):
        return fail(f"{args.name!r} is not a plain folder name")
    dest = PRETRAINED_DIR / args.name
    if dest.exists() and not args.force:
        return fail(f"{dest} exists; pass --force to replace it")
    try:
        source = codec.load(Path(args.source))
    except CheckpointError as err:
        return fail(str(err))
    if source.is_quantized and not int(source.symbol_counts.sum()):
        return fail(f"{args.source} has no symbol statistics (a cut-short run?): its token files "
                    "would be bit-packed; write the final model with --resume --set train.steps=STEP")

    wav, rate = load_audio(Path(codec.__file__).parent / "assets" / "example_speech.wav")
    wav = resample(wav.mean(0, keepdim=True), rate, source.sample_rate)[None]   # (1, 1, T)
    PRETRAINED_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{args.name}.", dir=PRETRAINED_DIR))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)           # mkdtemp's 0700 would hide an installed model from other users
    try:
        source.save(staging, inference_only=True)
        copy = codec.load(staging)
        checks = {"fingerprint": copy.fingerprint() == source.fingerprint()}
        with torch.no_grad():
            codes = source.encode(wav)
            checks["codes"] = torch.equal(copy.encode(wav), codes)
            checks["audio"] = torch.equal(copy.decode(codes), source.decode(codes))
        if not all(checks.values()):
            bad = ", ".join(name for name, ok in checks.items() if not ok)
            return fail(f"the inference-only copy differs from {args.source} in: {bad}")
        swap_into_place(staging, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    before = sum(f.stat().st_size for f in Path(args.source).glob("*")) if Path(args.source).is_dir() else 0
    after = (dest / WEIGHTS).stat().st_size
    print(f"{dest}: {after / 1e6:.1f} MB of weights (source folder {before / 1e6:.1f} MB), "
          f"fingerprint {copy.fingerprint()}; codes and audio identical to the source on the example clip")
    return 0


def swap_into_place(new: Path, dest: Path) -> None:
    """Rename new to dest; a previous dest is moved aside first and deleted only once new is in
    place. On any failure the previous one is put back, or, if even that fails, left where it
    was moved and named in the error."""
    if not dest.exists():
        new.rename(dest)
        return
    aside = dest.with_name(f".{dest.name}.old.{os.getpid()}")
    dest.rename(aside)
    try:
        new.rename(dest)
    except BaseException:
        try:
            aside.rename(dest)
        except OSError as err:
            raise RuntimeError(f"the previous {dest.name} could not be put back; it is at {aside}") from err
        raise
    shutil.rmtree(aside)


def fail(message: str) -> int:
    print(f"ship_model: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
