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

``manifest.csv`` lists every clip: path (relative to the output folder),
package, kind, language, duration_s, synthetic, split. The split comes from a
stable hash of the prompt's name (its path inside the voice folder, without the
suffix, e.g. "vm-goodbye" or "digits/1"), so the same prompt falls in the same
split in every language and no test prompt is ever trained on. The 31 music
tracks are too few for that: the tracks with the lowest hashes are held out
instead (2 test, 1 valid).

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
import io
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from tqdm import tqdm

try:
    from codec import fileio
    from codec.data import stable_hash, stable_split
except ModuleNotFoundError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from codec import fileio
    from codec.data import stable_hash, stable_split

VALID_FRACTION = 0.03
TEST_FRACTION = 0.05
SPEECH_RATE = 16000
MUSIC_RATE = 24000
MANIFEST_COLUMNS = ("path", "package", "kind", "language", "duration_s", "synthetic", "split")
ESPEAK_PACKAGE = "espeak-ng"


@dataclass(frozen=True)
class Package:
    kind: str        # "speech" or "music"
    language: str    # "" for music
    pattern: str     # glob of its audio files inside the unpacked package
    heldout: bool = False  # an independent evaluation voice: test-split prompts only, split "heldout"


PACKAGES = {
    "asterisk-core-sounds-en-g722": Package("speech", "en", "usr/share/asterisk/sounds/*/**/*.g722"),
    "asterisk-core-sounds-es-g722": Package("speech", "es", "usr/share/asterisk/sounds/*/**/*.g722"),
    "asterisk-core-sounds-fr-g722": Package("speech", "fr", "usr/share/asterisk/sounds/*/**/*.g722"),
    "drascula-music": Package("music", "", "usr/share/scummvm/drascula/**/*.ogg"),
    "asterisk-core-sounds-it-g722": Package("speech", "it", "usr/share/asterisk/sounds/*/**/*.g722",
                                            heldout=True),
    "asterisk-core-sounds-ru-g722": Package("speech", "ru", "usr/share/asterisk/sounds/*/**/*.g722",
                                            heldout=True),
}
TRAINING_PACKAGES = sorted(name for name, spec in PACKAGES.items() if not spec.heldout)
HELDOUT_PACKAGES = sorted(name for name, spec in PACKAGES.items() if spec.heldout)
HELDOUT_SPLIT = "heldout"
SKIPPED_FOLDERS = {"silence"}  # asterisk's silence/1 .. silence/9: no speech in them


class CorpusError(RuntimeError):
    """A step that cannot be done: a missing tool, a failed download or decode."""


@dataclass(frozen=True)
class Job:
    """One output file and how to make it."""
    output: str       # path relative to the corpus folder
    package: str
    kind: str
    language: str
    split: str        # train / valid / test
    synthetic: bool
    source: Path | None = None      # a file to decode with ffmpeg
    espeak: tuple[str, ...] = ()    # or an espeak-ng command whose output is decoded


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
    """Every audio file of a package, with its output name and split."""
    spec = PACKAGES[package]
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
    return [Job(output, package, spec.kind, spec.language, splits[name], False, source=src)
            for src, name, output in found]


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
                        prompt_split(prompt), True, espeak=cmd))
    return jobs


# ------------------------------------------------------------------- manifest

def manifest_row(job: Job, out: Path) -> dict[str, str]:
    info = sf.info(str(out / job.output))
    return {"path": job.output, "package": job.package, "kind": job.kind, "language": job.language,
            "duration_s": f"{info.frames / info.samplerate:.3f}", "synthetic": str(int(job.synthetic)),
            "split": job.split}


def read_manifest(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


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
    todo = [job for job in work if not (out / job.output).exists()]
    if todo:
        require("ffmpeg")
        pool = ThreadPoolExecutor(max_workers=max(1, jobs))
        try:
            futures = [pool.submit(make, job, out) for job in todo]
            for future in tqdm(as_completed(futures), total=len(futures), desc="decoding",
                               disable=not progress):
                future.result()
        finally:  # on an error or an interrupt: drop the queue, let running decodes clean up
            pool.shutdown(wait=True, cancel_futures=True)
    done = {p for p in packages} | ({ESPEAK_PACKAGE} if espeak > 0 else set())
    kept = [row for row in read_manifest(out / "manifest.csv")
            if row["package"] not in done and (out / row["path"]).is_file()]
    rows = kept + [manifest_row(job, out) for job in work]
    write_manifest(out / "manifest.csv", rows)
    return rows


def summarize(rows: list[dict[str, str]]) -> str:
    """A table of files and hours per package and per split."""
    lines = [f"{'':34} {'files':>6} {'hours':>7}"]

    def add(name: str, group: list[dict[str, str]]) -> None:
        hours = sum(float(r["duration_s"]) for r in group) / 3600
        lines.append(f"{name:34} {len(group):6d} {hours:7.3f}")

    for package in sorted({r["package"] for r in rows}):
        add(package, [r for r in rows if r["package"] == package])
    for split in ("train", "valid", "test", HELDOUT_SPLIT):
        add(f"split {split}", [r for r in rows if r["split"] == split])
    add("total", rows)
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
