#!/usr/bin/env python
"""Build a training corpus of real recorded audio from Debian packages.

    python tools/make_corpus.py --out data

Speech: the Asterisk voice prompts in English (Allison Smith), Spanish (Allison
Smith) and French (June Wallack), shipped as raw G.722 at 16 kHz, decoded to
``speech16k/<lang>/<prompt>.wav`` (16 kHz mono PCM16). The ``silence/`` files
are left out. Music: the Drascula soundtrack (Ogg Vorbis, 44.1 kHz stereo),
decoded to ``music24k/<track>.wav`` at 24 kHz, stereo kept. ``--espeak N`` adds
N utterances synthesised by espeak-ng in many voices and languages
(``synthetic16k/<lang>/<n>.wav``, marked synthetic=1).

More voices, decoded to ``speech16k/<package>/...`` (16 kHz mono PCM16; see
docs/corpus.md for hours, speakers, licences and credits): ``festvox-ru`` (one
Russian man reading 620 sentences), ``fillets-ng-data-cs`` and ``-nl`` (game
dialogue: two leads and minor characters per dub), ``tuxpaint-stamps-default``
(the spoken ``*_desc*`` stamp descriptions, one volunteer per language),
``klettres-data`` (letters and syllables, about 20 people, children among them),
``gcin-voice`` (Mandarin syllables, a man and a woman) and ``kajongg`` (game words,
8 voice sets). They are decoded by ffmpeg in batches, many files per call; the
klettres and fillets clips lose their leading and trailing silence
(``trim_bounds``) and very quiet clips (kajongg) are raised to a normal level
(``level_gain``). A file whose bytes repeat another of its package is decoded once.

``manifest.csv`` lists every clip: path (relative to the output folder),
package, kind, language, duration_s, synthetic, split, speaker, sex. The split comes from a
stable hash of the prompt's name (its path inside the voice folder, without the
suffix, e.g. "vm-goodbye" or "digits/1"), so the same prompt falls in the same
split in every language and no test prompt is ever trained on. The 31 music
tracks are too few for that: the tracks with the lowest hashes are held out
instead (2 test, 1 valid). ``speaker`` names one person (or one voice where the
package does not tell who) and ``sex`` is "m", "f", "child" or "" (unknown), from
``SPEAKERS``. The speakers in ``HELDOUT_SPEAKERS`` are whole people that no recipe
trains on: every clip of theirs has split "heldout_speaker" (also listed in
``heldout_speakers.csv``, same columns).

``--heldout`` also decodes the independent evaluation voices, which no recipe trains on:
the Asterisk prompts in Italian (Carlo, a man) and Russian (IvrvoiceRU, a woman), the
same G.722 at 16 kHz. Only their test-split prompts are decoded, with split "heldout",
so neither their speakers nor their prompts are trained on by a run that reads this
manifest (``data.root = "data"``, as every recipe does: it reads the "train" and "valid"
splits only; a run pointed at a folder without a manifest splits by path hash and would
train on them); ``awk -F, 'NR==1 || $7=="heldout"' data/manifest.csv`` lists
them for ``codec bench --audio``.

``--assets codec/assets`` copies the example clips the package bundles (short
test-split prompts, see ``EXAMPLES``) from a built corpus.

Downloads go to ``debs/``, packages are unpacked in ``extract/``. Every output
is written to a temporary name and renamed when complete, and outputs that
exist are skipped, so running again is a no-op and an interruption leaves no
half-written file.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from codec import fileio
from codec.data import stable_hash, stable_split

VALID_FRACTION = 0.03
TEST_FRACTION = 0.05
SPEECH_RATE = 16000
MUSIC_RATE = 24000
MANIFEST_COLUMNS = ("path", "package", "kind", "language", "duration_s", "synthetic", "split",
                    "speaker", "sex")
ESPEAK_PACKAGE = "espeak-ng"
HELDOUT_SPLIT = "heldout"
HELDOUT_SPEAKER_SPLIT = "heldout_speaker"
HELDOUT_SPEAKERS_CSV = "heldout_speakers.csv"
SKIPPED_FOLDERS = {"silence"}  # asterisk's silence/1 .. silence/9: no speech in them
ASTERISK_SPEAKERS = {"en": "ast_en", "es": "ast_es", "fr": "ast_fr", "it": "ast_it", "ru": "ast_ru"}
BATCH_FILES = 32     # files one ffmpeg call decodes (its start-up costs more than a short clip)


class CorpusError(RuntimeError):
    """A step that cannot be done: a missing tool, a failed download or decode."""


@dataclass(frozen=True)
class Job:
    """One output file and how to make it."""
    output: str       # path relative to the corpus folder
    package: str
    kind: str
    language: str
    split: str        # train / valid / test, heldout or heldout_speaker
    synthetic: bool
    source: Path | None = None      # a file to decode with ffmpeg
    espeak: tuple[str, ...] = ()    # or an espeak-ng command whose output is decoded
    speaker: str = ""               # an id of SPEAKERS (or a voice the package does not name)
    batched: bool = False           # decoded with others in one ffmpeg call, then cleaned (``finish``)
    trim: bool = False              # batched: leading and trailing silence removed


@dataclass(frozen=True)
class Found:
    """One audio file of an unpacked package, as a source lister sees it."""
    source: Path
    prompt: str       # what is said, the split key: shared by its recordings in every voice
    output: str       # path relative to the corpus folder
    language: str
    speaker: str


@dataclass(frozen=True)
class Package:
    kind: str        # "speech" or "music"
    language: str    # "" for music and where a lister tells it per file
    pattern: str = ""      # glob of its audio files inside the unpacked package (Asterisk, drascula)
    heldout: bool = False  # an independent evaluation voice: test-split prompts only, split "heldout"
    lister: Callable[[Path, str], list[Found]] | None = None  # or a function that finds them
    trim: bool = False     # with a lister: clips that are mostly silence, trimmed


def prompt_split(prompt: str) -> str:
    """The split of a prompt name, the same in every language."""
    return stable_split(prompt, VALID_FRACTION, TEST_FRACTION)


def ranked_splits(names: list[str]) -> dict[str, str]:
    """Splits for a small fixed set (the 31 music tracks), where hashing each name alone
    may hold out nothing: the names with the lowest hashes fill test, then valid."""
    order = sorted(names, key=stable_hash)
    n_test, n_valid = (math.ceil(f * len(names)) for f in (TEST_FRACTION, VALID_FRACTION))
    return {name: "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
            for i, name in enumerate(order)}


# ---------------------------------------------------------------------------- tools

_APT_NAME = {"apt-get": "apt", "dpkg-deb": "dpkg"}  # the Debian package that provides a tool


def require(tool: str) -> str:
    """The path of ``tool``, or a CorpusError that says how to install it."""
    path = shutil.which(tool)
    if path is None:
        raise CorpusError(f"'{tool}' was not found on PATH; install it "
                          f"(e.g. apt-get install {_APT_NAME.get(tool, tool)})")
    return path


def run(cmd: list[str], input: bytes | None = None, cwd: Path | None = None) -> bytes:
    """Runs ``cmd`` and returns its stdout; a non-zero exit becomes a CorpusError with its stderr."""
    proc = subprocess.run(cmd, input=input, cwd=cwd, stdin=None if input is not None else subprocess.DEVNULL,
                          capture_output=True)
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise CorpusError(f"{' '.join(cmd[:3])} ... failed (exit {proc.returncode}): " + " | ".join(tail))
    return proc.stdout


@contextmanager
def atomic_path(target: Path):
    """Yields a temporary path beside ``target`` (codec.fileio.atomic_path), creating its folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with fileio.atomic_path(target) as tmp:
        yield Path(tmp)


def remove_stale_temporaries(folder: Path) -> None:
    """Deletes what an interrupted run (killed before its cleanup) left behind."""
    if folder.is_dir():
        for tmp in folder.rglob(".*.tmp*"):     # codec.fileio names: .<stem>.<random>.tmp<suffix>
            if tmp.is_file():
                tmp.unlink()
            elif tmp.is_dir():
                shutil.rmtree(tmp)


# ------------------------------------------------------------------ speakers

@dataclass(frozen=True)
class Speaker:
    sex: str          # "m", "f", "child" or "" where neither the credits nor the voice tell
    credit: str = ""  # who the package credits for the voice ("" for no one)
    note: str = ""    # how the sex was found where no credit says it


# One entry per person (or voice) the packages tell apart. Sexes come from the credits (names,
# "nephew", "son 09 years"); every one was checked against the median F0 of the clips (adult
# men below about 160 Hz), and where no credit names the voice, or the F0 contradicts it, the
# note says so.
SPEAKERS: dict[str, Speaker] = {
    "ast_en": Speaker("f", "Allison Smith"),
    "ast_es": Speaker("f", "Allison Smith", "the same woman as ast_en"),
    "ast_fr": Speaker("f", "June Wallack"),
    "ast_it": Speaker("m", "Carlo Flora", "voice folder it_IT_m_Carlo"),
    "ast_ru": Speaker("f", "provided by Maxim Topal (ivrvoice.ru)", "voice folder ru_RU_f_IvrvoiceRU"),
    "ru_nsh": Speaker("m", "msu_ru_nsh voice, Nickolay V. Shmyrev", "F0 151 Hz"),
    "fillets_cs_small": Speaker("f", "", "the small fish (Czech dub); F0 276 Hz"),
    "fillets_cs_big": Speaker("m", "", "the big fish (Czech dub); F0 132 Hz"),
    "fillets_nl_small": Speaker("f", "", "the small fish (Dutch dub); F0 219 Hz"),
    "fillets_nl_big": Speaker("m", "", "the big fish (Dutch dub); F0 144 Hz"),
    "fillets_cs_minor": Speaker("", "", "about 40 minor characters (gods, parrot, vikings, skull...), "
                                "actors unknown; most F0 105-165 Hz, some 250-330 Hz"),
    "fillets_nl_minor": Speaker("", "", "about 20 minor characters, actors unknown; F0 130-240 Hz"),
    "tux_be": Speaker("f", "Kseniya Buraya"),
    "tux_bg": Speaker("m", "Krasimir Petkov"),
    "tux_ca": Speaker("m", "Pere Pujal Carabantes"),
    "tux_da": Speaker("m", "Joe Dalton"),
    "tux_el": Speaker("f", "Kiriaki Serafeim"),
    "tux_en": Speaker("", "", "uncredited; F0 165 Hz, a woman's or a high man's"),
    "tux_es": Speaker("f", "Estefania Ortiz"),
    "tux_fr": Speaker("m", "Jacques Chion (or PaulK, also credited)", "F0 136 Hz"),
    "tux_lt": Speaker("m", "", "uncredited; F0 121 Hz"),
    "tux_ml": Speaker("", "", "uncredited, 6 clips; F0 291 Hz"),
    "tux_nl": Speaker("m", "", "uncredited; F0 112 Hz"),
    "tux_ro": Speaker("f", "Tabbytha", "F0 219 Hz"),
    "tux_ru": Speaker("m", "Edwin Veber"),
    "kl_ar_rafik": Speaker("child", "Rafik, 'my little nephew'"),
    "kl_cs_eva": Speaker("f", "Eva Mikulcikova"),
    "kl_da_erik": Speaker("m", "Erik Kjaer Pedersen"),
    "kl_de_alpha": Speaker("", "", "letters; not the credited Helmut Kriege's voice: F0 220 Hz"),
    "kl_de_syllab": Speaker("m", "Helmut Kriege", "syllables; F0 115 Hz"),
    "kl_en_robert": Speaker("m", "Robert Wadley"),
    "kl_engb": Speaker("", "", "uncredited; F0 240 Hz"),
    "kl_es": Speaker("f", "Ana Belen Caballero and Juan Pedro Paredes", "one voice, F0 185 Hz"),
    "kl_fr_ludovic": Speaker("m", "Ludovic Grossard"),
    "kl_he_assaf": Speaker("m", "Assaf Gorgon"),
    "kl_hu": Speaker("m", "", "uncredited; F0 110 Hz"),
    "kl_it": Speaker("", "Pietro Pasotti", "F0 222 Hz: not an adult man's voice"),
    "kl_lt_liudas": Speaker("m", "Liudas Alisauskas"),
    "kl_ml": Speaker("m", "", "uncredited; F0 115 Hz"),
    "kl_nb": Speaker("", "", "from GCompris, uncredited; F0 258 Hz"),
    "kl_nds": Speaker("m", "Manfred Wiese and Soenke Dibbern", "two men, not told apart; F0 100 Hz"),
    "kl_nl": Speaker("", "Geert Stams", "F0 213 Hz: not an adult man's voice"),
    "kl_ptbr_michelle": Speaker("child", "Michelle Monte, 9 years (son of Lindonjohnson Monte, also "
                                "credited)", "F0 300 Hz throughout"),
    "kl_ru": Speaker("", "Google Code-in", "F0 215 Hz"),
    "kl_tn": Speaker("", "", "uncredited; F0 350 Hz, perhaps a child"),
    "kl_uk": Speaker("", "", "uncredited; F0 235 Hz"),
    "gcin_m": Speaker("m", "Edward Der-Hua Liu (files */3.ogg)", "F0 131 Hz"),
    "gcin_f": Speaker("f", "Chu Lo, ChionMeilin (files */5.ogg, CC-BY-3.0)", "F0 340 Hz"),
    **{f"kaj_{lang}_{voice}": Speaker("f" if voice.startswith("female") else "m",
                                      "Wolfgang Rohdewald (copyright)", "sex from the voice folder's name")
       for lang in ("en", "de") for voice in ("male1", "male2", "female1", "female2")},
}
# Whole people no recipe trains on (split "heldout_speaker"): a Tux Paint man and woman, a
# klettres woman and child, and the minor characters of the Czech fillets-ng dub (all of them:
# who voiced which is unknown, so none of their actors' characters is trained on).
HELDOUT_SPEAKERS = ("fillets_cs_minor", "kl_cs_eva", "kl_ptbr_michelle", "tux_da", "tux_el")


def speaker_sex(speaker: str) -> str:
    entry = SPEAKERS.get(speaker)
    return entry.sex if entry else ""


# ------------------------------------------------------------------- sources
# Listers: (unpacked package, package name) -> every audio file with its prompt, output and speaker.

FESTVOX_RU_WAVS = "usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"
FILLETS_SOUNDS = "usr/share/games/fillets-ng/sound"
TUXPAINT_STAMPS = "usr/share/tuxpaint/stamps"
TUXPAINT_DESCRIPTION = re.compile(r"(?P<stamp>.+)_desc(?:_(?P<lang>[A-Za-z]+))?(?:\.ogg)+")
KLETTRES_SOUNDS = "usr/share/klettres"
GCIN_SOUNDS = "usr/share/gcin-voice/ogg"
GCIN_VOICES = {"3": "gcin_m", "5": "gcin_f"}  # the file name tells the voice (debian/copyright)
KAJONGG_VOICES = "usr/share/kajongg/voices"
MIN_SOURCE_RATE = 16000  # narrower recordings are left out (15 Tux Paint clips at 8 kHz)
# klettres: a language folder, or "folder/alpha" and "folder/syllab" where two voices share it
KLETTRES_SPEAKERS = {
    "ar": "kl_ar_rafik", "cs": "kl_cs_eva", "da": "kl_da_erik", "de/alpha": "kl_de_alpha",
    "de/syllab": "kl_de_syllab", "en": "kl_en_robert", "fr": "kl_fr_ludovic", "he": "kl_he_assaf",
    "lt": "kl_lt_liudas", "pt_BR": "kl_ptbr_michelle",
}


def list_festvox_ru(extracted: Path, package: str) -> list[Found]:
    return [Found(src, f"ru_nsh/{src.stem}", f"speech16k/{package}/{src.stem}.wav", "ru", "ru_nsh")
            for src in sorted((extracted / FESTVOX_RU_WAVS).glob("*.wav"))]


def fillets_speaker(dub: str, stem: str) -> str:
    """Who speaks a fillets-ng line, from its file name: "m" (or "small") is the small fish and "v"
    (or "big") the big one wherever they stand ("1st-m-hej", "m-bude", "agenti-m"). The minor
    characters ("k1-pap-kruci": a parrot) are one speaker per dub: the credits do not say who
    voiced them, and one actor may voice several, so a character is no person."""
    parts = re.split(r"[-_]", stem)
    if "m" in parts or "small" in parts:
        return f"fillets_{dub}_small"
    if "v" in parts or "big" in parts:
        return f"fillets_{dub}_big"
    return f"fillets_{dub}_minor"


def list_fillets(extracted: Path, package: str) -> list[Found]:
    """sound/<level>/<dub>/<line>.ogg; a line's translations share its prompt (its file name)."""
    dub = package.rsplit("-", 1)[1]
    root = extracted / FILLETS_SOUNDS
    found = []
    for src in sorted(root.glob(f"**/{dub}/*.ogg")):
        level = src.parent.parent
        output = f"speech16k/{package}/{level.relative_to(root).as_posix()}/{src.stem}.wav"
        found.append(Found(src, f"fillets/{src.stem}", output, dub, fillets_speaker(dub, src.stem)))
    return found


def source_rate(path: Path) -> int:
    try:
        return sf.info(str(path)).samplerate
    except (RuntimeError, OSError) as err:  # soundfile's errors are RuntimeErrors
        raise CorpusError(f"cannot read {path}: {err}") from None


def list_tuxpaint(extracted: Path, package: str) -> list[Found]:
    """<folder>/<stamp>_desc[_<lang>].ogg (no language: English); a stamp's descriptions share a prompt."""
    root = extracted / TUXPAINT_STAMPS
    found = []
    for src in sorted(root.rglob("*_desc*.ogg")):
        match = TUXPAINT_DESCRIPTION.fullmatch(src.name)
        if match is None or not src.is_file() or source_rate(src) < MIN_SOURCE_RATE:
            continue
        lang = (match["lang"] or "en").lower()
        stamp = f"{src.parent.relative_to(root).as_posix()}/{match['stamp']}"
        found.append(Found(src, f"tuxpaint/{stamp}", f"speech16k/{package}/{stamp}_desc_{lang}.wav",
                           lang, f"tux_{lang}"))
    return found


def klettres_speaker(folder: str, kind: str) -> str:
    return (KLETTRES_SPEAKERS.get(f"{folder}/{kind}") or KLETTRES_SPEAKERS.get(folder)
            or f"kl_{folder.lower().replace('_', '')}")


def list_klettres(extracted: Path, package: str) -> list[Found]:
    """<lang>/alpha/<letter>.ogg and <lang>/syllab/<syllable>.ogg."""
    root = extracted / KLETTRES_SOUNDS
    return [Found(src, f"klettres/{src.parent.name}/{src.stem}",
                  f"speech16k/{package}/{src.relative_to(root).with_suffix('.wav').as_posix()}",
                  src.parts[-3].split("_")[0].lower(), klettres_speaker(src.parts[-3], src.parent.name))
            for src in sorted(root.glob("*/*/*.ogg"))]


def ascii_name(name: str) -> str:
    """``name`` with each character that is not an ASCII letter, digit, '-' or '_' written as its
    code point: "ㄅㄚ1" -> "u3105u311a1"."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else f"u{ord(c):04x}" for c in name)


def list_gcin(extracted: Path, package: str) -> list[Found]:
    """<bopomofo syllable>/<voice>.ogg; both voices of a syllable share its prompt."""
    return [Found(src, f"gcin/{src.parent.name}",
                  f"speech16k/{package}/{GCIN_VOICES[src.stem]}/{ascii_name(src.parent.name)}.wav",
                  "zh", GCIN_VOICES[src.stem])
            for src in sorted((extracted / GCIN_SOUNDS).glob("*/*.ogg")) if src.stem in GCIN_VOICES]


def list_kajongg(extracted: Path, package: str) -> list[Found]:
    """voices/<voice>/<word>.ogg (US English) and voices/<lang>/<voice>/<word>.ogg."""
    root = extracted / KAJONGG_VOICES
    found = []
    for src in sorted(root.rglob("*.ogg")):
        parts = src.relative_to(root).parts
        lang, voice = ("en", parts[0]) if len(parts) == 2 else parts[:2]
        found.append(Found(src, f"kajongg/{src.stem}", f"speech16k/{package}/{lang}/{voice}/{src.stem}.wav",
                           lang, f"kaj_{lang}_{voice}"))
    return found


ASTERISK_SOUNDS = "usr/share/asterisk/sounds/*/**/*.g722"
PACKAGES = {
    "asterisk-core-sounds-en-g722": Package("speech", "en", ASTERISK_SOUNDS),
    "asterisk-core-sounds-es-g722": Package("speech", "es", ASTERISK_SOUNDS),
    "asterisk-core-sounds-fr-g722": Package("speech", "fr", ASTERISK_SOUNDS),
    "drascula-music": Package("music", "", "usr/share/scummvm/drascula/**/*.ogg"),
    "asterisk-core-sounds-it-g722": Package("speech", "it", ASTERISK_SOUNDS, heldout=True),
    "asterisk-core-sounds-ru-g722": Package("speech", "ru", ASTERISK_SOUNDS, heldout=True),
    "festvox-ru": Package("speech", "", lister=list_festvox_ru),
    "fillets-ng-data-cs": Package("speech", "", lister=list_fillets, trim=True),
    "fillets-ng-data-nl": Package("speech", "", lister=list_fillets, trim=True),
    "tuxpaint-stamps-default": Package("speech", "", lister=list_tuxpaint),
    "klettres-data": Package("speech", "", lister=list_klettres, trim=True),
    "gcin-voice": Package("speech", "", lister=list_gcin),
    "kajongg": Package("speech", "", lister=list_kajongg),
}
TRAINING_PACKAGES = sorted(name for name, spec in PACKAGES.items() if not spec.heldout)
HELDOUT_PACKAGES = sorted(name for name, spec in PACKAGES.items() if spec.heldout)


# ------------------------------------------------------------------ packages

def fetch_and_extract(package: str, out: Path) -> Path:
    """Downloads (``apt-get download``) and unpacks (``dpkg-deb -x``) a package once."""
    extracted = out / "extract" / package
    if extracted.is_dir():
        return extracted
    debs = out / "debs"
    deb = next(iter(sorted(debs.glob(f"{package}_*.deb"))), None)
    if deb is None:
        apt = require("apt-get")
        debs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=debs, prefix=f".{package}.", suffix=".tmp") as tmp:
            run([apt, "download", package], cwd=Path(tmp))
            got = list(Path(tmp).glob(f"{package}_*.deb"))
            if len(got) != 1:
                raise CorpusError(f"apt-get download {package} gave no .deb file")
            deb = debs / got[0].name
            os.replace(got[0], deb)
    dpkg = require("dpkg-deb")
    extracted.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=extracted.parent, prefix=f".{package}.", suffix=".tmp"))
    try:
        run([dpkg, "-x", str(deb), str(tmp)])
        os.replace(tmp, extracted)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return extracted


def package_jobs(package: str, extracted: Path) -> list[Job]:
    """Every audio file of a package, with its output name, split and speaker."""
    spec = PACKAGES[package]
    if spec.lister is not None:
        return source_jobs(package, spec, spec.lister(extracted, package))
    found = []
    for src in sorted(extracted.glob(spec.pattern)):
        if src.is_symlink():
            continue  # drascula links every track from de/, en/, ... to audio/
        if spec.kind == "speech":
            voice_dir = extracted / "usr/share/asterisk/sounds" / src.relative_to(extracted).parts[4]
            name = src.relative_to(voice_dir).with_suffix("")
            if name.parts[0] in SKIPPED_FOLDERS:
                continue
            output = f"speech16k/{spec.language}/{name.as_posix()}.wav"
        else:
            name = Path(src.stem)
            output = f"music24k/{name}.wav"
        found.append((src, name.as_posix(), output))
    if not found:
        raise CorpusError(f"no audio files matching {spec.pattern} in {extracted}")
    if spec.kind == "music":
        splits = ranked_splits([name for _, name, _ in found])
    else:
        splits = {name: prompt_split(name) for _, name, _ in found}
    if spec.heldout:  # unseen voice and unseen prompts: the test-split prompts alone
        found = [f for f in found if splits[f[1]] == "test"]
        splits = dict.fromkeys(splits, HELDOUT_SPLIT)
    speaker = ASTERISK_SPEAKERS.get(spec.language, "") if spec.kind == "speech" else ""
    return [Job(output, package, spec.kind, spec.language, splits[name], False, source=src, speaker=speaker)
            for src, name, output in found]


def speaker_split(speaker: str, prompt: str) -> str:
    """A held-out speaker's clips are all "heldout_speaker"; other clips follow their prompt."""
    return HELDOUT_SPEAKER_SPLIT if speaker in HELDOUT_SPEAKERS else prompt_split(prompt)


def source_jobs(package: str, spec: Package, found: list[Found]) -> list[Job]:
    """Batched jobs for a lister's files, one per distinct content (the first name, sorted, wins)."""
    if not found:
        raise CorpusError(f"no audio files of {package} found in its unpacked folder")
    jobs, seen = [], set()
    for f in sorted(found, key=lambda f: f.output):
        digest = hashlib.sha256(f.source.read_bytes()).digest()
        if digest in seen:
            continue  # the same recording under another name: Tux Paint gives flower1..8 one description
        seen.add(digest)
        jobs.append(Job(f.output, package, spec.kind, f.language, speaker_split(f.speaker, f.prompt), False,
                        source=f.source, speaker=f.speaker, batched=True, trim=spec.trim))
    return jobs


def decode_command(job: Job, output: Path) -> list[str]:
    ffmpeg = require("ffmpeg")
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error"]
    if job.espeak:
        cmd += ["-f", "wav", "-i", "pipe:0", "-ac", "1", "-ar", str(SPEECH_RATE)]
    elif job.kind == "speech":
        cmd += ["-f", "g722", "-i", str(job.source), "-ac", "1", "-ar", str(SPEECH_RATE)]
    else:
        cmd += ["-i", str(job.source), "-ar", str(MUSIC_RATE)]
    return cmd + ["-af", "aresample=resampler=soxr", "-map_metadata", "-1", "-fflags", "+bitexact",
                  "-c:a", "pcm_s16le", "-f", "wav", "-y", str(output)]


def make(job: Job, out: Path) -> None:
    """Decodes (or synthesises) one output, unless it exists."""
    target = out / job.output
    if target.exists():
        return
    with atomic_path(target) as tmp:
        speech = run(job.espeak) if job.espeak else None
        run(decode_command(job, tmp), input=speech)


def batch_command(jobs: list[Job], outputs: list[Path]) -> list[str]:
    """One ffmpeg call that decodes every job's source to 16 kHz mono float WAV in ``outputs``."""
    cmd = [require("ffmpeg"), "-nostdin", "-hide_banner", "-loglevel", "error"]
    for job in jobs:
        cmd += ["-i", str(job.source)]
    for n, output in enumerate(outputs):
        cmd += ["-map", f"{n}:a:0", "-ac", "1", "-ar", str(SPEECH_RATE), "-af", "aresample=resampler=soxr",
                "-map_metadata", "-1", "-fflags", "+bitexact", "-c:a", "pcm_f32le", "-f", "wav", "-y",
                str(output)]
    return cmd


def no_audio_marker(target: Path) -> Path:
    """The empty file that stands for an output whose source holds no samples (one fillets-ng line)."""
    return target.with_name(f".{target.name}.noaudio")


def is_done(job: Job, out: Path) -> bool:
    target = out / job.output
    return target.exists() or (job.batched and no_audio_marker(target).exists())


def make_batch(jobs: list[Job], out: Path) -> None:
    """Decodes the batched jobs not done yet with one ffmpeg call, then ``finish``es each."""
    todo = [job for job in jobs if not is_done(job, out)]
    if not todo:
        return
    (out / "speech16k").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out / "speech16k", prefix=".batch.", suffix=".tmp") as tmp:
        decoded = [Path(tmp) / f"{n}.wav" for n in range(len(todo))]
        try:
            run(batch_command(todo, decoded))
        except CorpusError:  # one file spoils the call: decode them one by one to name it
            for job, path in zip(todo, decoded):
                try:
                    run(batch_command([job], [path]))
                except CorpusError as err:
                    raise CorpusError(f"cannot decode {job.source}: {err}") from None
        for job, path in zip(todo, decoded):
            finish(job, path, out / job.output)


def finish(job: Job, decoded: Path, target: Path) -> None:
    """Writes a decoded clip to ``target`` as PCM16: trimmed (``job.trim``), raised if very quiet;
    a source without samples leaves its ``no_audio_marker`` instead (and no manifest row)."""
    wav, rate = sf.read(str(decoded), dtype="float32")
    if wav.size == 0:
        target.parent.mkdir(parents=True, exist_ok=True)
        no_audio_marker(target).touch()
        return
    if job.trim:
        start, end = trim_bounds(wav, rate)
        wav = wav[start:end]
    wav = np.clip(wav * level_gain(wav, rate), -1.0, PCM16_MAX)
    with atomic_path(target) as tmp:
        sf.write(str(tmp), wav, rate, subtype="PCM_16", format="WAV")


# -------------------------------------------------------------- silence and level
# Pure functions of a mono clip (T,) and its rate. A frame is "sounding" when it is louder than
# the loudest frame less SILENCE_DB and than the noise floor (a low percentile of the frame
# levels) plus NOISE_MARGIN_DB; a frame within MIN_SILENCE_DB of the loudest always sounds.

FRAME_SECONDS = 0.02
SILENCE_DB = 40.0
NOISE_MARGIN_DB = 10.0
NOISE_PERCENTILE = 5.0
MIN_SILENCE_DB = 20.0
TRIM_MARGIN_SECONDS = 0.15  # kept before the first and after the last sounding frame
QUIET_DB = -35.0            # a clip whose sounding frames are quieter than this (dB re full scale)
TARGET_DB = -23.0           # is raised to this level,
PEAK_DB = -1.0              # its peak to at most this
PCM16_MAX = 32767 / 32768


def frame_levels_db(wav: np.ndarray, frame: int) -> np.ndarray:
    """The mean square of each run of ``frame`` samples (the last may be shorter), in dB: (T,) -> (F,)."""
    starts = np.arange(0, len(wav), frame)
    power = np.add.reduceat(np.square(wav, dtype=np.float64), starts) / np.diff(np.append(starts, len(wav)))
    return 10 * np.log10(power + 1e-20)


def sounding_frames(levels: np.ndarray) -> np.ndarray:
    """Which frames are not silence (see above): bool (F,); the loudest always is."""
    loudest = levels.max()
    floor = np.percentile(levels, NOISE_PERCENTILE)
    threshold = min(max(loudest - SILENCE_DB, floor + NOISE_MARGIN_DB), loudest - MIN_SILENCE_DB)
    return levels > threshold


def _frame(sample_rate: int) -> int:
    return max(1, round(FRAME_SECONDS * sample_rate))


def trim_bounds(wav: np.ndarray, sample_rate: int) -> tuple[int, int]:
    """``(start, end)``: ``wav[start:end]`` is the clip without its leading and trailing silence,
    TRIM_MARGIN_SECONDS kept on each side (less where the clip ends sooner)."""
    if len(wav) == 0:
        return 0, 0
    frame = _frame(sample_rate)
    sounding = np.flatnonzero(sounding_frames(frame_levels_db(wav, frame)))
    margin = round(TRIM_MARGIN_SECONDS * sample_rate)
    return max(0, int(sounding[0]) * frame - margin), min(len(wav), (int(sounding[-1]) + 1) * frame + margin)


def level_gain(wav: np.ndarray, sample_rate: int) -> float:
    """The factor that raises a very quiet clip (its sounding frames below QUIET_DB) to TARGET_DB,
    its peak to at most PEAK_DB; 1.0 for every other clip (silent ones included)."""
    peak = float(np.max(np.abs(wav), initial=0.0))
    if peak == 0.0:
        return 1.0
    levels = frame_levels_db(wav, _frame(sample_rate))
    level = 10 * np.log10(np.mean(10 ** (levels[sounding_frames(levels)] / 10)))
    if level >= QUIET_DB:
        return 1.0
    gain_db = min(TARGET_DB - level, PEAK_DB - 20 * np.log10(peak))
    return float(10 ** (max(0.0, gain_db) / 20))


# --------------------------------------------------------------------- espeak
# The same sentence in several languages, so a sentence's translations share a split.

SENTENCES = {
    "en": ["The weather will be cloudy tomorrow, with light rain in the afternoon.",
           "Please remember to close the window before you leave the house.",
           "My brother bought a new bicycle last week and rides it every morning.",
           "The library opens at nine o'clock and closes at six in the evening.",
           "Could you tell me how to get to the train station?",
           "We planted tomatoes, beans and sunflowers in the garden this spring.",
           "The children were laughing while the dog chased its own tail.",
           "After dinner, we listened to old records and talked until midnight."],
    "es": ["Mañana el tiempo estará nublado, con lluvia ligera por la tarde.",
           "Por favor, recuerda cerrar la ventana antes de salir de casa.",
           "Mi hermano compró una bicicleta nueva la semana pasada y la usa todas las mañanas.",
           "La biblioteca abre a las nueve y cierra a las seis de la tarde.",
           "¿Podría decirme cómo llegar a la estación de tren?",
           "Esta primavera plantamos tomates, judías y girasoles en el jardín.",
           "Los niños se reían mientras el perro perseguía su propia cola.",
           "Después de cenar, escuchamos discos viejos y hablamos hasta medianoche."],
    "fr": ["Demain, le temps sera nuageux, avec une pluie légère l'après-midi.",
           "N'oublie pas de fermer la fenêtre avant de quitter la maison.",
           "Mon frère a acheté un nouveau vélo la semaine dernière et le prend chaque matin.",
           "La bibliothèque ouvre à neuf heures et ferme à six heures du soir.",
           "Pourriez-vous me dire comment aller à la gare ?",
           "Ce printemps, nous avons planté des tomates, des haricots et des tournesols dans le jardin.",
           "Les enfants riaient pendant que le chien courait après sa propre queue.",
           "Après le dîner, nous avons écouté de vieux disques et parlé jusqu'à minuit."],
    "de": ["Morgen wird es bewölkt, mit leichtem Regen am Nachmittag.",
           "Bitte denk daran, das Fenster zu schließen, bevor du das Haus verlässt.",
           "Mein Bruder hat letzte Woche ein neues Fahrrad gekauft und fährt jeden Morgen damit.",
           "Die Bibliothek öffnet um neun Uhr und schließt um sechs Uhr abends.",
           "Können Sie mir sagen, wie ich zum Bahnhof komme?",
           "In diesem Frühling haben wir Tomaten, Bohnen und Sonnenblumen im Garten gepflanzt.",
           "Die Kinder lachten, während der Hund seinen eigenen Schwanz jagte.",
           "Nach dem Abendessen hörten wir alte Schallplatten und redeten bis Mitternacht."],
    "it": ["Domani il tempo sarà nuvoloso, con pioggia leggera nel pomeriggio.",
           "Per favore, ricordati di chiudere la finestra prima di uscire di casa.",
           "Mio fratello ha comprato una bicicletta nuova la settimana scorsa e la usa ogni mattina.",
           "La biblioteca apre alle nove e chiude alle sei di sera.",
           "Potrebbe dirmi come arrivare alla stazione dei treni?",
           "Questa primavera abbiamo piantato pomodori, fagioli e girasoli nel giardino.",
           "I bambini ridevano mentre il cane si inseguiva la coda.",
           "Dopo cena abbiamo ascoltato vecchi dischi e parlato fino a mezzanotte."],
    "pt": ["Amanhã o tempo estará nublado, com chuva fraca à tarde.",
           "Por favor, lembre-se de fechar a janela antes de sair de casa.",
           "O meu irmão comprou uma bicicleta nova na semana passada e anda nela todas as manhãs.",
           "A biblioteca abre às nove horas e fecha às seis da tarde.",
           "Pode dizer-me como chegar à estação de comboios?",
           "Nesta primavera plantámos tomates, feijão e girassóis no jardim.",
           "As crianças riam enquanto o cão perseguia o próprio rabo.",
           "Depois do jantar, ouvimos discos antigos e conversámos até à meia-noite."],
}
# espeak-ng voices for each language; the languages without sentences read numbers.
VOICES = {
    "en": ["en-us", "en-gb", "en-gb-scotland", "en-029"], "es": ["es", "es-419"],
    "fr": ["fr-fr", "fr-be"], "de": ["de"], "it": ["it"], "pt": ["pt", "pt-br"],
    "nl": ["nl"], "sv": ["sv"], "da": ["da"], "nb": ["nb"], "fi": ["fi"], "pl": ["pl"],
    "cs": ["cs"], "sk": ["sk"], "hr": ["hr"], "hu": ["hu"], "ro": ["ro"], "el": ["el"],
    "ru": ["ru"], "tr": ["tr"], "ca": ["ca"], "id": ["id"], "sw": ["sw"], "hi": ["hi"], "vi": ["vi"],
}
VARIANTS = ["", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "Alex", "Alicia", "Andrea", "Annie", "antonio", "aunty", "belinda", "benjamin",
            "caleb", "david", "Denis", "Diogo", "edward", "Gene", "gustave", "Henrique", "Hugo",
            "iven", "Jacky", "john", "linda", "marcelo", "Mario", "max", "Michael", "michel",
            "miguel", "pablo", "paul", "pedro", "quincy", "robert", "steph", "Storm", "zac",
            "anika", "norbert", "sandro", "shelby", "travis", "victor", "grandpa", "grandma"]


def espeak_jobs(count: int) -> list[Job]:
    """``count`` utterances; utterance n is the same on every run (seeded by n)."""
    if count <= 0:
        return []
    espeak = require("espeak-ng")
    jobs = []
    for n in range(count):
        rng = random.Random(f"espeak-{n}")
        if rng.random() < 0.7:
            language = rng.choice(sorted(SENTENCES))
            k = rng.randrange(len(SENTENCES[language]))
            text, prompt = SENTENCES[language][k], f"espeak/sentence-{k}"
        else:
            language = rng.choice(sorted(VOICES))
            text = ", ".join(str(rng.randrange(10 ** rng.randint(1, 4))) for _ in range(rng.randint(3, 6)))
            prompt = f"espeak/numbers-{n}"
        variant = rng.choice(VARIANTS)
        voice = rng.choice(VOICES[language]) + (f"+{variant}" if variant else "")
        cmd = (espeak, "-v", voice, "-s", str(rng.randint(120, 210)), "-p", str(rng.randint(25, 75)),
               "--stdout", text)
        jobs.append(Job(f"synthetic16k/{language}/{n:05d}.wav", ESPEAK_PACKAGE, "speech", language,
                        prompt_split(prompt), True, espeak=cmd, speaker=f"espeak_{voice}"))
    return jobs


# ------------------------------------------------------------------- manifest

def manifest_row(job: Job, out: Path) -> dict[str, str]:
    info = sf.info(str(out / job.output))
    return {"path": job.output, "package": job.package, "kind": job.kind, "language": job.language,
            "duration_s": f"{info.frames / info.samplerate:.3f}", "synthetic": str(int(job.synthetic)),
            "split": job.split, "speaker": job.speaker, "sex": speaker_sex(job.speaker)}


def read_manifest(path: Path) -> list[dict[str, str]]:
    """The rows of a manifest; one written before the speaker columns gets them empty (unknown)."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{**dict.fromkeys(MANIFEST_COLUMNS, ""), **row} for row in csv.DictReader(f)]


def write_manifest(path: Path, rows: list[dict[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: r["path"]))
    if path.is_file() and path.read_text(encoding="utf-8") == text.getvalue():
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text.getvalue(), encoding="utf-8")


# --------------------------------------------------------------------- assets

EXAMPLES = {  # bundled clips (codec/assets/): test-split prompts, never trained on
    "example_speech.wav": "speech16k/en/vm-tmpexists.wav",
    "example_speech_es.wav": "speech16k/es/vm-whichbox.wav",
    "example_speech_fr.wav": "speech16k/fr/unidentified-no-callback.wav",
}
MAX_EXAMPLE_SECONDS = 6.0


def make_assets(out: Path, assets: Path, rows: list[dict[str, str]]) -> None:
    """Copies the ``EXAMPLES`` clips from the corpus in ``out`` to ``assets``."""
    by_path = {row["path"]: row for row in rows}
    for name, rel in EXAMPLES.items():
        row = by_path.get(rel)
        if row is None or row["split"] != "test" or float(row["duration_s"]) > MAX_EXAMPLE_SECONDS:
            raise CorpusError(f"{rel} is not a test-split clip of at most {MAX_EXAMPLE_SECONDS} s in {out}")
        if not (assets / name).exists():
            with atomic_path(assets / name) as tmp:
                shutil.copyfile(out / rel, tmp)


# ---------------------------------------------------------------------- build

def build_corpus(out: Path, packages: list[str], espeak: int = 0, limit: int | None = None,
                 jobs: int = 2, progress: bool = True) -> list[dict[str, str]]:
    """Builds (or completes) the corpus in ``out`` and returns the manifest rows."""
    out = Path(out)
    for folder in ("debs", "extract", "speech16k", "music24k", "synthetic16k"):
        remove_stale_temporaries(out / folder)
    work: list[Job] = []
    for package in tqdm(packages, desc="packages", disable=not progress):
        work += package_jobs(package, fetch_and_extract(package, out))[:limit]
    work += espeak_jobs(espeak)
    todo = [job for job in work if not is_done(job, out)]
    if todo:
        require("ffmpeg")
        decode(todo, out, jobs, progress)
    work = [job for job in work if (out / job.output).exists()]
    done = {p for p in packages} | ({ESPEAK_PACKAGE} if espeak > 0 else set())
    kept = [row for row in read_manifest(out / "manifest.csv")
            if row["package"] not in done and (out / row["path"]).is_file()]
    rows = kept + [manifest_row(job, out) for job in work]
    write_manifest(out / "manifest.csv", rows)
    heldout = [row for row in rows if row["split"] == HELDOUT_SPEAKER_SPLIT]
    if heldout or (out / HELDOUT_SPEAKERS_CSV).is_file():
        write_manifest(out / HELDOUT_SPEAKERS_CSV, heldout)
    return rows


def decode_units(todo: list[Job]) -> list[list[Job]]:
    """The jobs as they are run: each unbatched one alone, batched ones BATCH_FILES to a call."""
    batched = [job for job in todo if job.batched]
    return ([[job] for job in todo if not job.batched]
            + [batched[i:i + BATCH_FILES] for i in range(0, len(batched), BATCH_FILES)])


def make_unit(unit: list[Job], out: Path) -> None:
    if unit[0].batched:
        make_batch(unit, out)
    else:
        make(unit[0], out)


def decode(todo: list[Job], out: Path, jobs: int, progress: bool) -> None:
    """Makes every job's output, ``jobs`` ffmpeg calls at a time, with a progress bar in files."""
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        futures = {pool.submit(make_unit, unit, out): len(unit) for unit in decode_units(todo)}
        with tqdm(total=len(todo), desc="decoding", unit="file", disable=not progress) as bar:
            for future in as_completed(futures):
                future.result()
                bar.update(futures[future])
    finally:  # on an error or an interrupt: drop the queue, let running decodes clean up
        pool.shutdown(wait=True, cancel_futures=True)


def summarize(rows: list[dict[str, str]]) -> str:
    """A table of files and hours per package and per split."""
    lines = [f"{'':34} {'files':>6} {'hours':>7}"]

    def add(name: str, group: list[dict[str, str]]) -> None:
        hours = sum(float(r["duration_s"]) for r in group) / 3600
        lines.append(f"{name:34} {len(group):6d} {hours:7.3f}")

    for package in sorted({r["package"] for r in rows}):
        add(package, [r for r in rows if r["package"] == package])
    for split in ("train", "valid", "test", HELDOUT_SPLIT, HELDOUT_SPEAKER_SPLIT):
        add(f"split {split}", [r for r in rows if r["split"] == split])
    add("total", rows)
    for label, heldout in (("trained", False), ("held out", True)):
        people = {(r["speaker"], r["sex"]) for r in rows if r["speaker"] and r["synthetic"] != "1"
                  and (r["split"] in (HELDOUT_SPLIT, HELDOUT_SPEAKER_SPLIT)) == heldout}
        sexes = [sex for _, sex in people]
        counts = ", ".join(f"{sexes.count(sex)} {sex or 'unknown'}" for sex in ("m", "f", "child", ""))
        lines.append(f"real speakers {label}: {len(people)} ({counts})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data"), help="corpus folder (default: data/)")
    parser.add_argument("--packages", nargs="+", choices=sorted(PACKAGES), default=TRAINING_PACKAGES,
                        metavar="PKG", help=f"subset of: {', '.join(sorted(PACKAGES))} "
                        f"(default: the training packages, {', '.join(TRAINING_PACKAGES)})")
    parser.add_argument("--heldout", action="store_true",
                        help=f"also the independent evaluation voices ({', '.join(HELDOUT_PACKAGES)}): "
                        f"their test-split prompts, split '{HELDOUT_SPLIT}', never trained on")
    parser.add_argument("--espeak", type=int, default=0, metavar="N",
                        help="also synthesise N utterances with espeak-ng (synthetic=1)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="at most N files per package (for quick tests)")
    parser.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                        help="decoders run in parallel")
    parser.add_argument("--assets", type=Path, default=None, metavar="DIR",
                        help="also copy the bundled example clips into DIR (codec/assets)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # clean up on `kill` as on Ctrl-C
    packages = list(dict.fromkeys(args.packages + (HELDOUT_PACKAGES if args.heldout else [])))
    try:
        rows = build_corpus(args.out, packages, args.espeak, args.limit, args.jobs, not args.quiet)
        if args.assets is not None:
            make_assets(args.out, args.assets, rows)
    except (CorpusError, OSError) as err:
        print(f"make_corpus: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("make_corpus: interrupted; run again to finish", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
