"""Tests for elax.report: loading, summaries, markdown/CSV, plot and CLI."""

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from elax import report

REPO = Path(__file__).resolve().parents[1]
IMP = "imp (cifar_resnet_32)"
ETT = "ett cifar_resnet_20→cifar_resnet_32 (append)"
REINIT = "reinit (cifar_resnet_32)"
SNIP = "snip (cifar_resnet_32)"

# test_accuracy by seed, for imp on cifar_resnet_32 at sparsities 0, 0.2, 0.36.
IMP_ACC = {0: (0.92, 0.91, 0.90), 1: (0.93, 0.91, 0.90), 2: (0.94, 0.94, 0.90)}


def _rec(method, sparsity, acc, seed=0, level=0, model="cifar_resnet_32", **extra):
    return dict(level=level, sparsity=sparsity, test_accuracy=acc, model=model,
                method=method, seed=seed, **extra)


def _ett(sparsity, acc, seed, level):
    return _rec("ett", sparsity, acc, seed=seed, level=level, source_model="cifar_resnet_20",
                source_level=level, strategy="append")


def _write(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records))
    return path


@pytest.fixture
def runs(tmp_path):
    """A tree of runs: imp (one dir per seed), ett (two seeds, one file), baselines."""
    root = tmp_path / "runs"
    for seed, accs in IMP_ACC.items():
        records = [_rec("imp", s, a, seed=seed, level=lvl, train_accuracy=1.0, steps=10)
                   for lvl, (s, a) in enumerate(zip((0.0, 0.2, 0.36), accs))]
        _write(root / f"imp_s{seed}" / "results.json", records)
    # 0.2000001 must share the 0.2 row once rounded to 4 decimals.
    _write(root / "ett" / "results.json", [
        _ett(0.2, 0.90, 0, 1), _ett(0.2000001, 0.92, 1, 1),
        _ett(0.36, 0.88, 0, 2), _ett(0.36, 0.89, 1, 2)])
    baselines = _write(tmp_path / "baselines.json", [
        _rec("snip", 0.36, 0.85), _rec("reinit", 0.2, 0.80, time_s=3.5)])
    return root, baselines


@pytest.fixture
def table(runs):
    return report.summarize(report.load_records(runs))


def test_load_records_recursive_and_dedup(runs):
    root, baselines = runs
    assert len(report.load_records([root, baselines])) == 9 + 4 + 2
    # A run dir, its parent and its results.json are one file: read once.
    imp0 = root / "imp_s0"
    assert len(report.load_records([imp0, root, imp0 / "results.json"])) == 13


def test_series_name():
    assert report.series_name(_rec("imp", 0.2, 0.9)) == IMP
    assert report.series_name(_ett(0.2, 0.9, 0, 1)) == ETT


def test_summarize_cells(table):
    assert table.sparsities == (0.0, 0.2, 0.36)
    assert table.series == (IMP, ETT, REINIT, SNIP)
    expected = {
        (IMP, 0.0): (0.93, (0.0002 / 3) ** 0.5, 3),
        (IMP, 0.2): (0.92, 0.0002 ** 0.5, 3),
        (IMP, 0.36): (0.90, 0.0, 3),
        (ETT, 0.2): (0.91, 0.01, 2),
        (ETT, 0.36): (0.885, 0.005, 2),
        (REINIT, 0.2): (0.80, 0.0, 1),
        (SNIP, 0.36): (0.85, 0.0, 1),
    }
    assert set(table.cells) == set(expected)
    for key, (mean, std, n) in expected.items():
        cell = table.cells[key]
        assert cell.mean == pytest.approx(mean, abs=1e-12)
        assert cell.std == pytest.approx(std, abs=1e-12)
        assert cell.n == n
    assert table.get(ETT, 0.0) is None


def test_to_markdown_exact(table):
    assert report.to_markdown(table) == (
        f"| sparsity % | remaining % | {IMP} | {ETT} | {REINIT} | {SNIP} |\n"
        "|---:|---:|---:|---:|---:|---:|\n"
        "| 0.00 | 100.00 | 93.00 ± 0.82 (n=3) |  |  |  |\n"
        "| 20.00 | 80.00 | 92.00 ± 1.41 (n=3) | 91.00 ± 1.00 (n=2) | 80.00 |  |\n"
        "| 36.00 | 64.00 | 90.00 ± 0.00 (n=3) | 88.50 ± 0.50 (n=2) |  | 85.00 |\n"
    )


def test_column_order_imp_ett_then_alphabetical():
    records = [_rec(m, 0.2, 0.5) for m in ("synflow", "dense", "imp", "grasp", "random")]
    records += [_ett(0.2, 0.5, 0, 1), _rec("imp", 0.2, 0.5, model="cifar_resnet_20")]
    assert report.summarize(records).series == (
        "imp (cifar_resnet_20)", IMP, ETT, "dense (cifar_resnet_32)",
        "grasp (cifar_resnet_32)", "random (cifar_resnet_32)", "synflow (cifar_resnet_32)")


def test_to_csv_rows(table):
    rows = list(csv.reader(io.StringIO(report.to_csv(table))))
    assert rows[0] == ["series", "sparsity", "mean", "std", "n"]
    got = [(r[0], float(r[1]), float(r[2]), float(r[3]), int(r[4])) for r in rows[1:]]
    expected = [
        (IMP, 0.0, 0.93, (0.0002 / 3) ** 0.5, 3), (IMP, 0.2, 0.92, 0.0002 ** 0.5, 3),
        (IMP, 0.36, 0.90, 0.0, 3), (ETT, 0.2, 0.91, 0.01, 2), (ETT, 0.36, 0.885, 0.005, 2),
        (REINIT, 0.2, 0.80, 0.0, 1), (SNIP, 0.36, 0.85, 0.0, 1),
    ]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g[0] == e[0] and g[4] == e[4]
        assert g[1:4] == pytest.approx(e[1:4], abs=1e-12)


def _assert_png(path):
    data = Path(path).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_plot_writes_png(table, tmp_path):
    path = tmp_path / "plot.png"
    report.plot(table, path, title="resnet-32")
    _assert_png(path)


def test_write_report(runs, tmp_path):
    out = tmp_path / "nested" / "out"
    markdown = report.write_report(runs, out, title="T")
    assert markdown.startswith("| sparsity % | remaining % |")
    assert "# T" in (out / "report.md").read_text()
    assert markdown in (out / "report.md").read_text()
    assert (out / "results.csv").read_text().startswith("series,sparsity,mean,std,n\n")
    _assert_png(out / "accuracy_vs_sparsity.png")


def _run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "elax.report", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60)


def test_cli(runs, tmp_path):
    root, baselines = runs
    out = tmp_path / "cli_out"
    proc = _run_cli(root, baselines, "--out", out, "--title", "cli", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| 36.00 | 64.00 | 90.00 ± 0.00 (n=3) |" in proc.stdout
    for name in ("report.md", "results.csv", "accuracy_vs_sparsity.png"):
        assert (out / name).is_file()
        assert str(out / name) in proc.stdout


def test_cli_error_exit_code(tmp_path):
    proc = _run_cli(tmp_path / "nowhere", cwd=tmp_path)
    assert proc.returncode == 1
    assert "nowhere" in proc.stderr


def test_import_does_not_load_matplotlib():
    code = "import sys, elax.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_missing_results_json(tmp_path):
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_run"):
        report.load_records([tmp_path / "empty_run"])
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        report.load_records([tmp_path / "does_not_exist"])


def test_record_missing_key(tmp_path):
    record = _rec("imp", 0.2, 0.9)
    del record["test_accuracy"]
    path = _write(tmp_path / "bad_run" / "results.json", [_rec("imp", 0.0, 0.9), record])
    with pytest.raises(ValueError, match="test_accuracy") as info:
        report.load_records([tmp_path / "bad_run"])
    assert str(path) in str(info.value)


def test_ett_record_missing_strategy(tmp_path):
    record = _ett(0.2, 0.9, 0, 1)
    del record["strategy"]
    _write(tmp_path / "results.json", [record])
    with pytest.raises(ValueError, match="strategy"):
        report.load_records(tmp_path / "results.json")
