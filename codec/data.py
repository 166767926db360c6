"""Training and validation data: fixed-length crops of audio files at the model's rate.

A dataset is either a folder (searched recursively for anything soundfile reads)
or a manifest CSV as written by ``tools/make_corpus.py`` (columns ``path``
relative to the CSV's folder, and optionally ``split``, ``kind``, ``language``,
``synthetic``, ``package`` and ``speaker``; a row without a speaker is its
package's). A folder that holds a ``manifest.csv`` is read through it, and its
rows can be selected by kind, language, package (``sources``) and speaker.

Splits never overlap: the manifest's ``split`` column decides, else a stable
hash of the file's path relative to the root (``stable_split``). Every file gives
``max(1, length // segment)`` items per epoch, so long files are seen in
proportion to their length; the trainer draws its batches uniformly from these
items unless ``sampling = "speaker"``, ``weights`` or ``max_synthetic_share`` ask
otherwise (``AudioDataset.sampling_weights``). Training items are random crops with a random gain
and, when ``speed`` lists factors, a random speed change (pitch and formants move
together, as if another speaker; the usual speed perturbation of speech
recognition), and, when ``eq_db`` is set, one random peaking filter (a timbre
or microphone change), all drawn from a generator seeded by
``(seed, epoch, index)``; other splits give the file's consecutive segments,
unchanged, in a fixed order.
"""
from __future__ import annotations

import bisect
import csv
import hashlib
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch.utils.data import Dataset

from codec.audio import AudioError, audio_info, audio_suffixes, load_audio, resample, resampled_length, to_mono

SPLITS = ("train", "valid", "test")
EVAL_SPLITS = ("heldout", "heldout_speaker")  # manifest splits no recipe trains on: unseen voices, people
SAMPLING = ("file", "speaker")
MANIFEST_NAME = "manifest.csv"


class DatasetError(ValueError):
    """A dataset that cannot be built: no files, no files in the split, bad manifest."""


def stable_hash(key: str) -> float:
    """A number in [0, 1) that depends only on ``key`` (the same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def stable_split(key: str, valid_fraction: float = 0.03, test_fraction: float = 0.0) -> str:
    """"train", "valid" or "test" for ``key``: "test" with probability test_fraction, and so on."""
    u = stable_hash(key)
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


@dataclass
class DataConfig:
    root: str = "data"                      # folder (recursive) or manifest CSV
    sample_rate: int = 16000                # the model's rate; files are resampled to it
    segment_seconds: float = 1.0            # crop length
    pad_short: bool = True                  # True: zero-pad short files; False: skip them
    channel: int | None = None              # None: mean of the channels; else that channel
    gain_db: tuple[float, float] = (-12.0, 0.0)  # random gain range for training crops
    valid_fraction: float = 0.03            # hash split, used where no manifest split exists
    test_fraction: float = 0.0
    seed: int = 0
    split: str = "train"                    # which split a dataset serves by default
    kinds: tuple[str, ...] = ()             # manifest "kind" filter, e.g. ("speech",); () keeps all
    languages: tuple[str, ...] = ()         # manifest "language" filter, e.g. ("en", "es"); () keeps all
    synthetic: bool = True                  # keep manifest rows marked synthetic=1
    sources: tuple[str, ...] = ()           # manifest "package" filter, e.g. ("festvox-ru",); () keeps all
    speakers: tuple[str, ...] = ()          # manifest "speaker" filter, e.g. ("ru_nsh", "tux_bg"); () keeps all
    sampling: str = "file"                  # training draws: "file" = every item alike (a file by its length),
                                            # "speaker" = every speaker alike (its items alike)
    weights: dict[str, float] = field(default_factory=dict)  # training draws: a speaker's (else its
                                            # package's) share times this, e.g. {"ru_nsh" = 0.5}
    max_synthetic_share: float = 1.0        # training draws: synthetic rows' share at most this
    cache: bool = False                     # keep each resampled file in memory (~230 MB per hour at 16 kHz)
    speed: tuple[float, ...] = ()           # training crops: speed factors drawn uniformly, e.g. (0.9, 1.0, 1.1); () = off
    eq_db: float = 0.0                      # training crops: one peaking filter, gain uniform in +-eq_db, centre
                                            # log-uniform in EQ_RANGE_HZ, Q = 1; 0 = off

    def __post_init__(self) -> None:
        if not isinstance(self.speed, (tuple, list)):
            raise DatasetError(f"data.speed must be a list of factors such as [0.9, 1.0, 1.1], got {self.speed!r}")
        for factor in self.speed:
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0.5 <= factor <= 2.0:
                raise DatasetError(f"data.speed factors must be numbers from 0.5 to 2.0, got {factor!r}")
        if isinstance(self.eq_db, bool) or not isinstance(self.eq_db, (int, float)) or not 0 <= self.eq_db <= 24:
            raise DatasetError(f"data.eq_db must be a number of dB from 0 to 24, got {self.eq_db!r}")
        if self.sampling not in SAMPLING:
            raise DatasetError(f"data.sampling must be one of {SAMPLING}, got {self.sampling!r}")
        if not isinstance(self.weights, dict) or not all(
                isinstance(k, str) and _is_number(v) and v >= 0 for k, v in self.weights.items()):
            raise DatasetError(f"data.weights must be a table of speaker or package names to numbers >= 0, "
                               f"got {self.weights!r}")
        if not _is_number(self.max_synthetic_share) or not 0 <= self.max_synthetic_share <= 1:
            raise DatasetError(f"data.max_synthetic_share must be a number from 0 to 1, "
                               f"got {self.max_synthetic_share!r}")

    @property
    def segment_length(self) -> int:
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def default_draws(self) -> bool:
        """True when training draws every item alike (as before speakers were known)."""
        return self.sampling == "file" and not self.weights and self.max_synthetic_share >= 1


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Clip:
    path: Path
    source_rate: int
    frames: int              # length at the model's rate
    speaker: str = ""        # manifest "speaker", else its "package", else ""
    package: str = ""
    synthetic: bool = False


@dataclass(frozen=True)
class _Entry:
    """A file of a split, with what the manifest says of it."""
    path: Path
    speaker: str = ""
    package: str = ""
    synthetic: bool = False


def _manifest_path(root: Path) -> Path | None:
    if root.is_file() and root.suffix.lower() == ".csv":
        return root
    if root.is_dir() and (root / MANIFEST_NAME).is_file():
        return root / MANIFEST_NAME
    return None


def _read_manifest(manifest: Path, config: DataConfig, split: str) -> list[_Entry]:
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "path" not in rows[0]:
        raise DatasetError(f"{manifest} has no 'path' column")
    entries = []
    for row in rows:
        package = row.get("package") or ""
        speaker = row.get("speaker") or package        # manifests before speakers: one per package
        synthetic = (row.get("synthetic") or "0").strip() in ("1", "true", "True")
        if config.kinds and row.get("kind") not in config.kinds:
            continue
        if config.languages and row.get("language") not in config.languages:
            continue
        if config.sources and package not in config.sources:
            continue
        if config.speakers and speaker not in config.speakers:
            continue
        if not config.synthetic and synthetic:
            continue
        row_split = row.get("split") or stable_split(
            Path(row["path"]).as_posix(), config.valid_fraction, config.test_fraction)
        if row_split == split:
            entries.append(_Entry(manifest.parent / row["path"], speaker, package, synthetic))
    return entries


def audio_files(root: Path) -> list[Path]:
    """Every file under ``root`` (recursively, sorted) that soundfile reads; hidden ones skipped."""
    suffixes = audio_suffixes()
    return [p for p in sorted(root.rglob("*"))
            if p.suffix.lower() in suffixes and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(root).parts)]  # incl. temporaries


def _scan_folder(root: Path, config: DataConfig, split: str) -> list[_Entry]:
    found = audio_files(root)
    if not found:
        raise DatasetError(f"no audio files found under {root}")
    return [_Entry(p) for p in found
            if stable_split(p.relative_to(root).as_posix(), config.valid_fraction, config.test_fraction) == split]


def list_clips(config: DataConfig, split: str) -> list[Clip]:
    """The clips of ``split`` (or of a manifest's EVAL_SPLITS), with their lengths at the model's
    rate (headers only are read)."""
    if split not in SPLITS + EVAL_SPLITS:
        raise DatasetError(f"split must be one of {SPLITS + EVAL_SPLITS}, got {split!r}")
    root = Path(config.root)
    if not root.exists():
        raise DatasetError(f"no such dataset folder or manifest: {root}")
    manifest = _manifest_path(root)
    entries = _read_manifest(manifest, config, split) if manifest else _scan_folder(root, config, split)
    if not entries:
        raise DatasetError(f"no audio files in split {split!r} of {root}")
    clips = []
    for entry in entries:
        info = audio_info(entry.path)
        if info.frames == 0:
            raise AudioError(f"{entry.path} contains no samples")
        clips.append(Clip(entry.path, info.sample_rate,
                          resampled_length(info.frames, info.sample_rate, config.sample_rate),
                          entry.speaker, entry.package, entry.synthetic))
    return clips


def draw_weights(clips: list[Clip], counts: list[int], config: DataConfig) -> np.ndarray:
    """The probability of each item (clip n has counts[n] of them) in a training draw, ``(sum(counts),)``.

    "file": proportional to the items ("speaker": each speaker's items share one equal part),
    times ``weights`` of the clip's speaker, else of its package (1 if neither is named); then,
    where synthetic clips would have more than ``max_synthetic_share``, they are scaled to it
    and the real clips to the rest.
    """
    n = np.asarray(counts, dtype=np.float64)
    share = n.copy()
    if config.sampling == "speaker":
        per_speaker: dict[str, float] = {}
        for clip, items in zip(clips, n):
            per_speaker[clip.speaker] = per_speaker.get(clip.speaker, 0.0) + items
        share = share / np.array([per_speaker[clip.speaker] for clip in clips])
    share *= np.array([config.weights.get(c.speaker, config.weights.get(c.package, 1.0)) for c in clips])
    if share.sum() <= 0:
        raise DatasetError("data.weights leave no training clip with a weight above 0")
    share /= share.sum()
    synthetic = np.array([clip.synthetic for clip in clips], dtype=bool)
    cap, synthetic_share = config.max_synthetic_share, share[synthetic].sum()
    if synthetic_share > cap:
        if synthetic_share >= 1.0:
            raise DatasetError(f"data.max_synthetic_share is {cap}, but every training clip drawn is synthetic")
        share[synthetic] *= cap / synthetic_share
        share[~synthetic] *= (1 - cap) / (1 - synthetic_share)
    return np.repeat(share / n, np.asarray(counts, dtype=np.int64))


class AudioDataset(Dataset):
    """Crops ``(1, segment_length)`` float32 of the clips of one split.

    ``split`` defaults to ``config.split``. Call ``set_epoch`` before each
    training epoch for fresh crops; the same (seed, epoch, index) always gives
    the same crop and gain. DataLoader workers copy the dataset when an epoch's
    iteration starts, so ``set_epoch`` reaches them unless ``persistent_workers``
    is on.
    """

    def __init__(self, config: DataConfig, split: str | None = None):
        self.config = config
        self.split = split or config.split
        self.length = config.segment_length
        if self.length <= 0:
            raise DatasetError(f"segment_seconds must be positive, got {config.segment_seconds}")
        clips = list_clips(config, self.split)
        if not config.pad_short:
            clips = [c for c in clips if c.frames >= self.length]
            if not clips:
                raise DatasetError(
                    f"every file in split {self.split!r} of {config.root} is shorter than "
                    f"{config.segment_seconds} s and pad_short is off")
        self.clips = clips
        counts = [max(1, c.frames // self.length) for c in clips]
        self._starts = np.cumsum([0] + counts).tolist()  # item offsets of each clip
        # the trainer's draws: None = every item alike (torch.randint), else these probabilities
        self.sampling_weights: torch.Tensor | None = (
            None if config.default_draws else torch.from_numpy(draw_weights(clips, counts, config)))
        self._cache: dict[int, torch.Tensor] = {}
        self.epoch = 0

    @property
    def random_crops(self) -> bool:
        return self.split == "train"

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(clip number, segment number within the clip)`` of an item."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        clip = bisect.bisect_right(self._starts, index) - 1
        return clip, index - self._starts[clip]

    def __getitem__(self, index: int) -> torch.Tensor:
        clip_no, segment = self.locate(index)
        frames = self.clips[clip_no].frames
        if self.random_crops:
            rng = np.random.default_rng([self.config.seed, self.epoch, index])
            speed = float(rng.choice(self.config.speed)) if self.config.speed else 1.0
            ratio = speed_ratio(speed)     # resampled as this fraction: read what it turns into L samples
            need = -(-self.length * ratio.numerator // ratio.denominator)
            start = int(rng.integers(0, max(0, frames - need) + 1))
            gain_db = rng.uniform(*self.config.gain_db) if self.config.gain_db else 0.0
            eq = None
            if self.config.eq_db:
                low, high = (math.log(min(f, 0.45 * self.config.sample_rate)) for f in EQ_RANGE_HZ)
                eq = (math.exp(rng.uniform(low, high)), rng.uniform(-self.config.eq_db, self.config.eq_db))
        else:
            speed, need, start, gain_db, eq = 1.0, self.length, segment * self.length, 0.0, None
        if speed != 1.0:
            crop = self._read_speed_changed(clip_no, start, need, speed)
        else:
            crop = self.read(clip_no, start, min(need, frames - start))  # (1, <= need)
        if eq is not None:
            crop = peaking_eq(crop, self.config.sample_rate, *eq)
        crop = F.pad(crop, (0, self.length - crop.shape[-1]))
        if gain_db:
            crop = crop * 10.0 ** (gain_db / 20.0)
        return crop.contiguous()

    def _read_speed_changed(self, clip_no: int, start: int, need: int, speed: float) -> torch.Tensor:
        """The ``need`` source samples from ``start`` at ``speed``, ``(1, <= length)``.

        Reads more samples on each side where the clip has them, so that the resampling filter
        sees real audio past the crop's ends instead of zeros (which made them ring): up to
        ``SPEED_MARGIN`` on the right; on the left a whole number k of periods p of the ratio p/q
        (output sample k * q is then exactly source sample ``start``): ``SPEED_MARGIN`` rounded
        up to whole periods, fewer where the clip begins sooner, none when ``start`` < p.
        """
        ratio = speed_ratio(speed)
        p, q = ratio.numerator, ratio.denominator
        periods = min(-(-SPEED_MARGIN // p), start // p)
        first = start - periods * p
        last = min(self.clips[clip_no].frames, start + need + SPEED_MARGIN)
        wide = change_speed(self.read(clip_no, first, last - first), speed)
        return wide[:, periods * q:periods * q + self.length]

    def read(self, clip_no: int, start: int, length: int) -> torch.Tensor:
        """Samples ``[start, start + length)`` of a clip at the model's rate, ``(1, length)``."""
        if self.config.cache:
            if clip_no not in self._cache:
                self._cache[clip_no] = self._load(self.clips[clip_no])
            return self._cache[clip_no][:, start:start + length]
        return self._read_window(self.clips[clip_no], start, length)

    def _load(self, clip: Clip) -> torch.Tensor:
        wav, sr = load_audio(clip.path)
        return resample(to_mono(wav, self.config.channel), sr, self.config.sample_rate)

    def _read_window(self, clip: Clip, start: int, length: int) -> torch.Tensor:
        """Reads only the source samples a window needs (codec.streaming.ResampledSignal)."""
        from codec.streaming import FileSignal, ResampledSignal
        window = ResampledSignal(FileSignal(clip.path), self.config.sample_rate).read(start, start + length)
        return to_mono(window, self.config.channel)


# Source samples read past each end of a speed-changed crop: more than the resampling filter's
# reach (torchaudio's windowed sinc spans 6 zero crossings of the lower rate each side: at most
# 13 source samples for the factors 0.5 to 2 allowed here).
SPEED_MARGIN = 32


def speed_ratio(factor: float) -> Fraction:
    """The fraction p/q (denominator at most 100) that ``change_speed`` really applies."""
    return Fraction(factor).limit_denominator(100)


def change_speed(wav: torch.Tensor, factor: float) -> torch.Tensor:
    """``wav`` played p/q = ``speed_ratio(factor)`` times faster: ``(..., T) -> (..., ceil(T * q / p))``.

    Band-limited resampling: the samples are read as if at rate p and written at rate q, so
    pitch and formants rise by p/q. The ends ring a little (the filter sees zeros past them):
    training crops are cut from a wider window (``AudioDataset._read_speed_changed``).
    """
    ratio = speed_ratio(factor)
    return resample(wav, ratio.numerator, ratio.denominator)


EQ_RANGE_HZ = (150.0, 6000.0)   # centres of the random peaking filter (at most 0.45 x the sample rate)


def peaking_eq(wav: torch.Tensor, sample_rate: int, freq: float, gain_db: float, q: float = 1.0) -> torch.Tensor:
    """One peaking biquad (RBJ cookbook): ``gain_db`` at ``freq``, unity far from it. ``(..., T)``."""
    w0 = 2 * math.pi * min(freq, 0.45 * sample_rate) / sample_rate
    a, alpha = 10 ** (gain_db / 40), math.sin(w0) / (2 * q)
    b = torch.tensor([1 + alpha * a, -2 * math.cos(w0), 1 - alpha * a], dtype=wav.dtype)
    den = torch.tensor([1 + alpha / a, -2 * math.cos(w0), 1 - alpha / a], dtype=wav.dtype)
    return AF.lfilter(wav, den, b, clamp=False)


def make_datasets(config: DataConfig) -> tuple[AudioDataset, AudioDataset]:
    """The training dataset and its validation twin."""
    return AudioDataset(config, "train"), AudioDataset(config, "valid")

