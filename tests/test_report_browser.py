"""The benchmark's HTML report in a real browser: headless Chromium, no network.

A small benchmark writes a report; a test-only copy of it, next to it so that its relative
paths resolve, carries a script that checks every image and audio element and writes what it
found into the DOM, which ``chromium --dump-dom`` prints. Chromium also takes a screenshot.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest
import soundfile as sf

from codec import bench, classic
from tests.helpers import tiny_model

CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed "
                                "(apt-get install chromium; .ci/run installs it)")

CHECK_SCRIPT = """
<script>
(async () => {
  await new Promise(ready => document.readyState === 'complete' ? ready() : addEventListener('load', ready));
  const images = [...document.images].map(img => ({src: img.getAttribute('src'), width: img.naturalWidth}));
  const audios = await Promise.all([...document.querySelectorAll('audio')].map(a => new Promise(done => {
    const report = loaded => done({src: a.getAttribute('src'), loaded, duration: a.duration});
    a.addEventListener('loadedmetadata', () => report(true));
    a.addEventListener('error', () => report(false));
    a.preload = 'metadata';
    a.load();
  })));
  const out = document.createElement('pre');
  out.id = 'report-check';
  out.textContent = JSON.stringify({images, audios});
  document.body.appendChild(out);
})();
</script>
"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, speech_clips) -> Path:
    pytest.importorskip("matplotlib", reason="the report's plots need matplotlib (pip install 'rvqcodec[bench]')")
    root = tmp_path_factory.mktemp("report")
    clips = root / "clips"
    clips.mkdir()
    for path in speech_clips[:2]:
        x, sr = sf.read(str(path))
        sf.write(str(clips / path.name), x[: sr], sr)
    model = str(tiny_model("rvq", n_q=2).save(root / "model"))
    config = bench.BenchConfig(audio=clips, out=root / "out", models=[model], opus_kbps=[6],
                               codec2_modes=["3200"], metrics=["si_sdr", "log_mel", "mrstft"], progress=False)
    bench.run_bench(config)
    return root / "out"


def test_report_loads_in_chromium(report_dir, tmp_path):
    page = (report_dir / "report.html").read_text()
    checked = report_dir / "report_check.html"
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    for attempt in range(3):    # a loaded machine can run out the virtual-time budget before media loads
        done = chromium("--virtual-time-budget=30000", "--dump-dom", checked.as_uri(),
                        profile=tmp_path / f"profile{attempt}")
        found = re.search(r'<pre id="report-check">(.*?)</pre>', done.stdout, re.S)
        if found:
            break
    assert found, f"no check result in the DOM; chromium said: {done.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))

    assert len(result["images"]) == 3                              # one plot per metric
    for image in result["images"]:
        assert image["width"] > 0, f"{image['src']} did not load"

    systems = 2 + (not classic.missing_tools(classic.OPUS_TOOLS)) + (not classic.missing_tools(classic.CODEC2_TOOLS))
    assert len(result["audios"]) == 2 * (1 + systems)              # reference + every system, per clip
    for audio in result["audios"]:
        assert (report_dir / unquote(audio["src"])).is_file(), audio["src"]
        assert audio["loaded"] and audio["duration"] == pytest.approx(1.0, abs=0.01), audio


def test_report_screenshot(report_dir, tmp_path):
    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1280,2200", (report_dir / "report.html").as_uri(),
                    profile=tmp_path / "profile")
    assert shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
