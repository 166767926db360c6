"""The README and docs stay true: the README's Python examples run, CI runs its test command
verbatim, its figures and the results tables are the published benchmark summaries, its links
and recipe paths resolve."""
import re
from pathlib import Path

import pytest

import codec.pretrained
from codec.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RESULTS = (ROOT / "docs" / "results.md").read_text()
DOCS = ["README.md", "docs/results.md", "docs/experiments.md", "docs/benchmark.md"]
HELD_OUT = "docs/bench/summary.md"                       # v1 speech16k, Italian/Russian, ViSQOL as recorded
HELD_OUT_26 = "docs/bench/itru_visqol26/summary.md"      # v1, the same clips, ViSQOL at -26 dBov
HEADLINE = "docs/bench/itru_v2/summary.md"               # today's speech16k, the same clips, ViSQOL at -26 dBov
# The README's headline columns -> (summary file, summary column).
HEADLINE_COLUMNS = {"nominal kbps": (HEADLINE, "nominal kbps"), "actual kbps": (HEADLINE, "actual kbps"),
                    "PESQ-WB": (HEADLINE, "PESQ (WB) ↑"), "STOI": (HEADLINE, "STOI ↑"),
                    "ViSQOL": (HEADLINE, "ViSQOL ↑")}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def section(text: str, heading: str) -> str:
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def test_ci_runs_the_readme_test_command_verbatim():
    install_and_test = blocks("bash")[1].strip()
    assert "pytest" in install_and_test
    assert install_and_test in (ROOT / ".ci" / "run").read_text()


def test_readme_is_short():
    assert len(README.splitlines()) <= 200


@pytest.mark.skipif("speech16k" not in codec.pretrained.available(), reason="the bundled model is not installed")
@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_python_examples_run(index, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    code = blocks("python")[index].replace('"example', f'"{tmp_path}/example')   # outputs go to tmp_path
    exec(compile(code, f"README.md python block {index}", "exec"), {})


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def system_tables(text: str) -> list[tuple[str, list[str], dict[tuple[str, str], list[str]]]]:
    """Markdown tables whose header starts with "system | setting": (source, header, rows keyed
    by their first two cells), each under the last benchmark summary named before it."""
    tables: list[tuple[str, list[str], dict[tuple[str, str], list[str]]]] = []
    source, in_table = HELD_OUT, False
    for line in text.splitlines():
        if not line.startswith("|"):
            named = re.findall(r"(?<![\w/])(?:docs/)?(bench/[\w/]*summary\.md)", line)
            source = f"docs/{named[-1]}" if named else source
            in_table = False
            continue
        row = cells(line)
        if not in_table:
            in_table = True
            if row[:2] == ["system", "setting"]:
                tables.append((source, row, {}))
            else:
                tables.append(("", row, {}))             # not a benchmark table: skipped below
        elif not set(row[0]) <= set("-:"):
            tables[-1][2][(row[0], row[1])] = row[2:]
    return [t for t in tables if t[0]]


def summary(source: str) -> dict[tuple[str, str], dict[str, str]]:
    """A published summary's rows by (system, setting), each a dict column -> cell."""
    (_, header, rows), = system_tables((ROOT / source).read_text())
    return {key: dict(zip(header[2:], row)) for key, row in rows.items()}


def without_count(cell: str) -> str:
    return re.sub(r" \(n=\d+\)$", "", cell)


def test_the_readme_table_is_the_published_benchmark_of_the_default_model():
    (_, header, rows), = system_tables(section(README, "## How good it is"))
    assert 4 <= len(rows) <= 6
    assert {system for system, _ in rows} == {"speech16k (RVQ)", "Opus", "Codec2"}
    assert "-26 dBov" in (ROOT / HEADLINE).read_text()           # the level the README states
    published = {source: summary(source) for source, _ in HEADLINE_COLUMNS.values()}
    for key, row in rows.items():
        for column, cell in zip(header[2:], row):
            source, name = HEADLINE_COLUMNS[column]
            assert key in published[source], f"README row {key} is not in {source}"
            assert cell == without_count(published[source][key][name]), (key, column, source)


def test_the_results_tables_are_the_published_summaries():
    tables = system_tables(RESULTS)
    sizes = {source: len(rows) for source, _, rows in tables}
    assert sizes[HELD_OUT] >= 10 and sizes["docs/bench/stage1_fr/summary.md"] >= 10
    for source, header, rows in tables:
        published = summary(source)
        for key, row in rows.items():
            assert key in published, f"docs/results.md row {key} is not in {source}"
            clips_nominal_actual_pesq_stoi_visqol_sisdr_mel = list(published[key].values())[:8]
            assert row == clips_nominal_actual_pesq_stoi_visqol_sisdr_mel[1:], (source, key)


def test_tables_follow_the_summary_named_before_them():
    text = ("intro\n| system | setting | x |\n|---|---|--:|\n| a | b | 1 |\n"
            "see bench/other/summary.md here\n| system | setting | x |\n| a | b | 2 |\n| c | d | 3 |\n"
            "\n| what | figure |\n| e | f |\n")
    assert [(source, rows) for source, _, rows in system_tables(text)] == [
        (HELD_OUT, {("a", "b"): ["1"]}),
        ("docs/bench/other/summary.md", {("a", "b"): ["2"], ("c", "d"): ["3"]})]


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


def anchor(heading: str) -> str:
    """The fragment GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_anchor_follows_github():
    assert anchor("ViSQOL at −26 dBov") == "visqol-at-26-dbov"
    assert anchor("2026-11-27: warm restart (lost)") == "2026-11-27-warm-restart-lost"


@pytest.mark.parametrize("doc", DOCS)
def test_every_relative_link_and_anchor_resolves(doc):
    path = ROOT / doc
    text = path.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, fragment = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), (doc, target)
        if fragment:
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
            assert fragment in {anchor(h) for h in headings}, (doc, target)


@pytest.mark.parametrize("doc", ["README.md", "docs/results.md"])
def test_every_recipe_named_exists_and_loads(doc):
    named = set(re.findall(r"recipes/[a-z0-9_/]+\.toml", (ROOT / doc).read_text()))
    assert named
    for recipe in named:
        load_recipe(ROOT / recipe)


def test_readme_lists_the_bundled_models_with_their_recipes():
    rows = [cells(line) for line in section(README, "## Bundled models").splitlines() if line.startswith("| `")]
    names = {re.match(r"`(\w+)`", row[0]).group(1) for row in rows}
    assert names == set(codec.pretrained.available())
    for row in rows:
        name = re.match(r"`(\w+)`", row[0]).group(1)
        stage2 = re.findall(r"\((recipes/\w+\.toml)\)", row[-1])[-1]
        assert load_recipe(ROOT / stage2).model.name == name, (name, stage2)


@pytest.mark.parametrize("path", sorted((ROOT / "recipes" / "ablations").glob("*.toml")), ids=lambda p: p.name)
def test_every_ablation_says_where_its_result_is_logged(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert 1 <= len(header) <= 2, path.name
    logged = re.search(r'docs/experiments\.md, "([^"]+)"', " ".join(header))
    assert logged, path.name
    headings = re.findall(r"^## (.+)$", (ROOT / "docs" / "experiments.md").read_text(), re.M)
    assert any(heading.endswith(logged.group(1)) for heading in headings), path.name
    load_recipe(path)
