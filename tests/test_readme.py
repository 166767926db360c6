"""The README stays true: its Python examples run, and CI runs its test command verbatim."""
import re
from pathlib import Path

import pytest

import codec.pretrained

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_test_command_verbatim():
    install_and_test = blocks("bash")[1].strip()
    assert "pytest" in install_and_test
    assert install_and_test in (ROOT / ".ci" / "run").read_text()


@pytest.mark.skipif("speech16k" not in codec.pretrained.available(), reason="the bundled model is not installed")
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_run(index, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = blocks("python")[index].replace('"example', f'"{tmp_path}/example')   # outputs go to tmp_path
    exec(compile(code, f"README.md python block {index}", "exec"), {})


def table_rows(text: str) -> dict[tuple[str, str], list[str]]:
    """Markdown table rows keyed by their first two cells (system, setting)."""
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) > 2 and not set(cells[0]) <= set("-:") and cells[0] != "system":
            rows[(cells[0], cells[1])] = cells[2:]
    return rows


def test_the_readme_benchmark_table_is_the_published_summary():
    section = README.split("## Benchmark", 1)[1].split("\n## ", 1)[0]
    readme = table_rows(section)
    summary = table_rows((ROOT / "docs" / "bench" / "summary.md").read_text())
    assert len(readme) >= 10
    for key, cells in readme.items():
        assert key in summary, f"README row {key} is not in docs/bench/summary.md"
        clips_nominal_actual_pesq_stoi_visqol_sisdr_mel = summary[key][:8]
        assert cells == clips_nominal_actual_pesq_stoi_visqol_sisdr_mel[1:], key
