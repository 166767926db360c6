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


def readme_tables(section: str) -> dict[str, dict[tuple[str, str], list[str]]]:
    """The Benchmark section's tables, each under the last summary file named before it."""
    tables: dict[str, dict[tuple[str, str], list[str]]] = {}
    source = "docs/bench/summary.md"
    for line in section.splitlines():
        if not line.startswith("|"):
            named = re.findall(r"docs/bench/[\w/]*summary\.md", line)
            source = named[-1] if named else source
            continue
        tables.setdefault(source, {}).update(table_rows(line))
    return tables


def test_the_readme_benchmark_tables_are_the_published_summaries():
    section = README.split("## Benchmark", 1)[1].split("\n## ", 1)[0]
    tables = readme_tables(section)
    assert len(tables["docs/bench/summary.md"]) >= 10
    assert len(tables.get("docs/bench/stage1_fr/summary.md", {})) >= 10
    for source, readme in tables.items():
        summary = table_rows((ROOT / source).read_text())
        for key, cells in readme.items():
            assert key in summary, f"README row {key} is not in {source}"
            clips_nominal_actual_pesq_stoi_visqol_sisdr_mel = summary[key][:8]
            assert cells == clips_nominal_actual_pesq_stoi_visqol_sisdr_mel[1:], (source, key)


def test_readme_tables_follow_the_summary_named_before_them():
    text = ("intro\n| a | b | 1 |\nsee docs/bench/other/summary.md here\n| a | b | 2 |\n| c | d | 3 |\n")
    assert readme_tables(text) == {"docs/bench/summary.md": {("a", "b"): ["1"]},
                                   "docs/bench/other/summary.md": {("a", "b"): ["2"], ("c", "d"): ["3"]}}


def test_command_line_synopsis_names_real_subcommands_and_options():
    import argparse

    from codec.cli import build_parser
    synopsis = README.split("## Command line", 1)[1].split("```", 2)[1].strip().splitlines()
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert {line.split()[1] for line in synopsis if line.startswith("codec ")} == set(subparsers.choices)
    for line in synopsis:
        assert line.startswith("codec "), line
        options = subparsers.choices[line.split()[1]]._option_string_actions
        for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line):
            assert flag in options, (line, flag)
