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
