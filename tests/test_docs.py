"""The documentation runs as written: the configuration reference is the schema's, every code block of the README
and docs/ runs or is marked `no-run` (with a reason nearby), and the notebook executes on a tiny run."""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

from elax import config as config_lib
from conftest import ROOT

DOCS = [pathlib.Path(ROOT, "README.md"), *sorted(pathlib.Path(ROOT, "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)


def blocks(path: pathlib.Path) -> list[tuple[str, str, str]]:
    """(language, attributes, code) of every fenced block of a markdown file."""
    return [(m[1], m[2].strip(), m[3]) for m in FENCE.finditer(path.read_text())]


def test_the_configuration_reference_is_the_schemas():
    text = pathlib.Path(ROOT, "docs", "configuration.md").read_text()
    assert text == config_lib.reference_markdown(), "run: python -m elax.config > docs/configuration.md"
    for name in config_lib.KEYS:
        assert f"| `{name}` |" in text


def test_every_code_block_runs_or_says_it_does_not():
    for path in DOCS:
        for language, attributes, code in blocks(path):
            if language in ("python", "bash"):
                assert attributes in ("", "no-run", "run"), (path.name, attributes)
                assert language == "python" or attributes, f"{path.name}: a bash block must say run or no-run:\n{code}"


@pytest.mark.parametrize("path", [p for p in DOCS if any(lang == "python" and not attrs
                                                          for lang, attrs, _ in blocks(p))], ids=lambda p: p.name)
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"docs_{path.stem}"}
    for language, attributes, code in blocks(path):
        if language == "python" and not attributes:
            exec(compile(code, f"{path.name} block", "exec"), namespace)


@pytest.mark.parametrize("path", [p for p in DOCS if any(lang == "bash" and attrs == "run"
                                                          for lang, attrs, _ in blocks(p))], ids=lambda p: p.name)
def test_bash_blocks_marked_run_run(path):
    for language, attributes, code in blocks(path):
        if language == "bash" and attributes == "run":
            done = subprocess.run(["bash", "-e", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]


def test_the_notebook_executes_on_a_tiny_run(imp_run, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    run_copy = tmp_path / "run"   # the shared run is read-only; the notebook trains into <run>_to_20
    shutil.copytree(imp_run[0], run_copy)
    monkeypatch.setenv("ELAX_NOTEBOOK_RUN", str(run_copy))
    notebook = nbformat.read(os.path.join(ROOT, "examples", "elastic_transfer.ipynb"), as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")   # stored clean
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = "".join(o.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "Ticket(cifar_resnet_20_4, level=3" in text and "test accuracy after training:" in text
    assert os.path.isdir(str(run_copy) + "_to_20")
