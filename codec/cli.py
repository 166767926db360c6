"""The ``codec`` command line: encode, decode, info (and train, bench).

    codec encode IN_AUDIO OUT_TOKENS [--model NAME|PATH] [--n-q N | --kbps X] [--force]
    codec decode IN_TOKENS OUT_AUDIO [--model NAME|PATH] [--force] [--model-rate]
    codec info IN_TOKENS
    codec train RECIPE [--out DIR] [--resume] [--until STEP] [--set TABLE.KEY=VALUE ...]

``build_parser`` declares every command; ``HANDLERS`` maps each command to one function
``handler(args) -> exit code``. Adding a command is adding its subparser and its handler.
Errors are one line on stderr (``codec: error: ...``) and exit code 1 (usage errors: 2,
interrupted: 130), never a traceback, and never a partial output file.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from codec.api import decode_file, encode_file, read_header
from codec.bench import positive_int
from codec.distributed import exit_process
from codec.runtime import keep_freed_memory

PROG = "codec"


class CommandError(Exception):
    """A failure the user can act on, reported as one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit code 2), like every other error here."""

    def error(self, message: str) -> None:
        self.exit(2, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# ---------------------------------------------------------------------------- arguments
def _positive_float(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


_positive_float.__name__ = "positive number"      # argparse names the type in its messages


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A neural audio codec: audio files to tokens and back.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar, no summary line")

    p = sub.add_parser("encode", parents=[common], help="audio file -> token file")
    p.add_argument("input", metavar="IN_AUDIO", help="any format soundfile reads, any rate and channels")
    p.add_argument("output", metavar="OUT_TOKENS", help="token file to write (suggested suffix .rvqt)")
    p.add_argument("--model", default="speech16k", help="bundled model name or model path (default: %(default)s)")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--n-q", type=positive_int, help="codebooks to use (default: all)")
    rate.add_argument("--kbps", type=_positive_float,
                      help="use the most codebooks whose nominal bitrate per channel fits")
    p.add_argument("--force", action="store_true", help="overwrite OUT_TOKENS if it exists")

    p = sub.add_parser("decode", parents=[common], help="token file -> audio file")
    p.add_argument("input", metavar="IN_TOKENS")
    p.add_argument("output", metavar="OUT_AUDIO", help="format from the suffix: .wav, .flac, .ogg, ...")
    p.add_argument("--model", help="model name or path (default: the one the token file names)")
    p.add_argument("--force", action="store_true", help="overwrite OUT_AUDIO if it exists")
    p.add_argument("--model-rate", action="store_true",
                   help="keep the model's sample rate instead of restoring the original one")

    p = sub.add_parser("info", help="describe a token file")
    p.add_argument("input", metavar="IN_TOKENS")

    p = sub.add_parser("train", parents=[common], help="train a model from a TOML recipe")
    p.add_argument("recipe", metavar="RECIPE", help="recipe file (.toml)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: chosen by the recipe)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in DIR")
    p.add_argument("--until", type=int, metavar="STEP",
                   help="stop after STEP with a checkpoint, as Ctrl-C would (a budget for one sitting)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="TABLE.KEY=VALUE",
                   help="override one recipe value, e.g. --set train.steps=1000 (repeatable)")

    p = sub.add_parser("bench", parents=[common], help="bitrate vs quality of models and classic codecs")
    from codec import bench
    bench.add_arguments(p)
    return parser


# ---------------------------------------------------------------------------- handlers
def run_encode(args: argparse.Namespace) -> int:
    header = encode_file(args.input, args.output, model=args.model, n_q=args.n_q, kbps=args.kbps,
                         force=args.force, progress=_show_progress(args))
    if not args.quiet:
        duration = header.num_samples / header.sample_rate
        print(f"{args.output}: {header.channels} channel(s), {duration:.2f} s, n_q {header.n_q}, "
              f"{_kbps(Path(args.output).stat().st_size * 8 / duration)} kbps")
    return 0


def run_decode(args: argparse.Namespace) -> int:
    info = decode_file(args.input, args.output, model=args.model, force=args.force,
                       model_rate=args.model_rate, progress=_show_progress(args))
    if not args.quiet:
        print(f"{args.output}: {info.channels} channel(s), {info.sample_rate} Hz, {info.duration:.2f} s")
    return 0


def run_info(args: argparse.Namespace) -> int:
    header = read_header(args.input)
    size = Path(args.input).stat().st_size
    duration = header.num_samples / header.sample_rate
    bits_per_code = math.log2(header.codebook_size)
    payload = (f"entropy-coded (statistics {header.entropy_model})" if header.entropy_model
               else "bit-packed")
    if duration > 0:
        nominal = _kbps(header.num_codes * bits_per_code / duration)
        actual = _kbps(size * 8 / duration)
    else:
        nominal = actual = "n/a"
    rows = [
        ("file", f"{args.input} ({size} bytes)"),
        ("model", header.model_name),
        ("fingerprint", header.model_fingerprint),
        ("sample rate", f"{header.sample_rate} Hz (model: {header.model_sample_rate} Hz)"),
        ("channels", str(header.channels)),
        ("duration", f"{duration:.3f} s ({header.num_samples} samples per channel)"),
        ("n_q", f"{header.n_q} codebooks of {header.codebook_size} codes, "
                f"{header.num_frames} frames per channel"),
        ("payload", payload),
        ("nominal bitrate", f"{nominal} kbps ({bits_per_code:g} bits per code, all channels)"),
        ("actual bitrate", f"{actual} kbps (file bytes * 8 / duration)"),
    ]
    width = max(len(key) for key, _ in rows) + 1
    for key, value in rows:
        print(f"{key + ':':<{width}} {value}")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from codec.trainer import TrainingError, train_from_recipe
    if args.until is not None and args.until < 1:
        raise CommandError(f"--until must be a step >= 1, got {args.until}")
    try:
        result = train_from_recipe(args.recipe, args.out, args.resume, overrides=args.overrides,
                                   progress=not args.quiet, until=args.until)
    except (TrainingError, ValueError) as err:
        raise CommandError(str(err)) from None
    if result.interrupted:
        print(f"stopped at step {result.step}; checkpoint written, continue with --resume", file=sys.stderr)
    elif not args.quiet:
        print(f"trained {result.step} steps; model written to {result.model_dir}")
    return 0


def run_bench(args: argparse.Namespace) -> int:
    from codec import bench
    return bench.run(args)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "encode": run_encode,
    "decode": run_decode,
    "info": run_info,
    "train": run_train,
    "bench": run_bench,
}


def _show_progress(args: argparse.Namespace) -> bool:
    return not args.quiet and sys.stderr.isatty()     # tests and pipes stay quiet


def _kbps(bits_per_second: float) -> str:
    return f"{bits_per_second / 1000:.3f}"


# ---------------------------------------------------------------------------- entry point
# The project's own errors (AudioError, TokenFileError, CheckpointError, ModelMismatchError and
# the model's argument checks are all ValueErrors), file-system errors, and CommandError.
EXPECTED_ERRORS = (ValueError, OSError, CommandError)


def _one_line(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror and err.filename:
        text = f"{err.strerror}: {err.filename}"
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it).

    A rank of a distributed ``codec train`` exits here instead, output flushed, without
    interpreter finalisation (see :func:`codec.distributed.shut_down`)."""
    code = _main(argv)
    exit_process(code)
    return code


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings on the command line are one line, like its errors."""
    print(f"{PROG}: warning: {message}", file=sys.stderr if file is None else file)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every output being written is removed on the way out."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _main(argv: Sequence[str] | None) -> int:
    keep_freed_memory()
    shown, warnings.showwarning = warnings.showwarning, _show_warning
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        args = build_parser().parse_args(argv)
        return HANDLERS[args.command](args)
    except SystemExit as exit_:                      # argparse: --help (0) or a usage error (2)
        return 0 if exit_.code is None else exit_.code if isinstance(exit_.code, int) else 1
    except KeyboardInterrupt as stop:
        terminated = isinstance(stop, Terminated)
        print(f"{PROG}: {'terminated' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except EXPECTED_ERRORS as err:
        print(f"{PROG}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = shown
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
