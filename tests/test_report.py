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
from elax.report import plotting

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
        _rec("snip", 0.36, 0.85, level=2), _rec("reinit", 0.2, 0.80, level=1, time_s=3.5)])
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
        # Mean of 0.2 and 0.2000001, rounded to 4 decimals, is the row's own 0.2.
        assert cell.sparsity == key[1]
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


def _csv_rows(table):
    rows = list(csv.reader(io.StringIO(report.to_csv(table))))
    assert rows[0] == ["series", "sparsity", "row_sparsity", "mean", "std", "n"]
    return [(r[0], *map(float, r[1:5]), int(r[5])) for r in rows[1:]]


def _assert_rows(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g[0] == e[0] and g[5] == e[5]
        assert g[1:5] == pytest.approx(e[1:5], abs=1e-12)


def test_to_csv_rows(table):
    _assert_rows(_csv_rows(table), [
        (IMP, 0.0, 0.0, 0.93, (0.0002 / 3) ** 0.5, 3),
        (IMP, 0.2, 0.2, 0.92, 0.0002 ** 0.5, 3),
        (IMP, 0.36, 0.36, 0.90, 0.0, 3),
        (ETT, 0.2, 0.2, 0.91, 0.01, 2),
        (ETT, 0.36, 0.36, 0.885, 0.005, 2),
        (REINIT, 0.2, 0.2, 0.80, 0.0, 1),
        (SNIP, 0.36, 0.36, 0.85, 0.0, 1),
    ])


def _ett_records():
    """IMP at 0.20/0.36 and ETT tickets of those levels at 0.2049/0.3680."""
    return [_rec("imp", 0.2, 0.93, seed=0, level=1), _rec("imp", 0.2, 0.91, seed=1, level=1),
            _rec("imp", 0.36, 0.90, seed=0, level=2),
            _ett(0.2049, 0.9778, 0, 1), _ett(0.368, 0.92, 0, 2), _ett(0.368, 0.93, 1, 2)]


def test_one_level_of_imp_runs_of_two_models_shares_a_row_and_its_claims():
    # Width-4 ResNets: source IMP level 1 at 60.01%, target at 60.00%. Two rows put ETT (in its source's row)
    # beside neither the target's IMP level nor its baselines, and the claims table lost every comparison.
    records = []
    for seed in (0, 1):
        records += [_rec("imp", 0.6001, 0.94, seed=seed, level=1, model="cifar_resnet_20"),
                    _rec("imp", 0.6, 0.93 + seed / 100, seed=seed, level=1), _ett(0.6145, 0.95, seed, 1),
                    _rec("random", 0.6, 0.9, seed=seed, level=1), _rec("imp", 0.84, 0.9, seed=seed, level=2)]
    assert report.summarize(records).sparsities == (0.6, 0.84)
    found = [(c.other, round(c.mean * 100, 2), c.n) for c in report.claims(records)]
    assert found == [("imp (cifar_resnet_32)", 1.5, 2), ("random (cifar_resnet_32)", 5.0, 2)]


def test_ett_shares_imp_rows_markdown_exact():
    table = report.summarize(_ett_records())
    assert table.sparsities == (0.2, 0.36)
    assert report.to_markdown(table) == (
        f"| sparsity % | remaining % | {IMP} | {ETT} |\n"
        "|---:|---:|---:|---:|\n"
        "| 20.00 | 80.00 | 92.00 ± 1.00 (n=2) | 97.78 (at 20.49%) |\n"
        "| 36.00 | 64.00 | 90.00 | 92.50 ± 0.50 (n=2, at 36.80%) |\n"
    )
    assert table.get(ETT, 0.2).sparsity == 0.2049
    assert table.get(ETT, 0.36).sparsity == 0.368


def test_ett_shares_imp_rows_csv():
    _assert_rows(_csv_rows(report.summarize(_ett_records())), [
        (IMP, 0.2, 0.2, 0.92, 0.01, 2),
        (IMP, 0.36, 0.36, 0.90, 0.0, 1),
        (ETT, 0.2049, 0.2, 0.9778, 0.0, 1),
        (ETT, 0.368, 0.36, 0.925, 0.005, 2),
    ])


def test_real_ett_shifts_share_imp_rows():
    pairs = [(0.2, 0.2049), (0.36, 0.368), (0.488, 0.4982), (0.5904, 0.6021)]
    records = [_rec("imp", i, 0.9, level=k) for k, (i, _) in enumerate(pairs, 1)]
    records += [_ett(e, 0.9, 0, k) for k, (_, e) in enumerate(pairs, 1)]
    table = report.summarize(records)
    assert table.sparsities == tuple(i for i, _ in pairs)
    assert [table.get(ETT, i).sparsity for i, _ in pairs] == [e for _, e in pairs]


def test_row_labelled_by_imp_sparsity():
    # The ETT ticket is the row's smallest sparsity, but IMP defines the level; level 3 has no IMP record.
    records = [_ett(0.199, 0.91, 0, 1), _rec("imp", 0.2, 0.92, level=1),
               _rec("snip", 0.5, 0.8, level=3), _ett(0.51, 0.81, 0, 3)]
    table = report.summarize(records)
    assert table.sparsities == (0.2, 0.5)
    assert table.get(ETT, 0.2).sparsity == 0.199
    # Without imp records the smallest sparsity labels the row.
    assert table.get(SNIP, 0.5).sparsity == 0.5
    assert table.get(ETT, 0.5).sparsity == 0.51
    lines = report.to_markdown(table).splitlines()
    assert lines[2] == "| 20.00 | 80.00 | 92.00 | 91.00 (at 19.90%) |  |"
    assert lines[3] == "| 50.00 | 50.00 |  | 81.00 (at 51.00%) | 80.00 |"


def test_rows_split_beyond_tolerance():
    # Remaining weights 50% vs 42%: 19% apart, beyond the default 15%.
    records = [_rec("snip", 0.50, 0.8), _rec("grasp", 0.58, 0.7)]
    assert report.summarize(records).sparsities == (0.50, 0.58)
    # 50% vs 44% remaining: 13.6% apart, one row.
    records = [_rec("snip", 0.50, 0.8), _rec("grasp", 0.56, 0.7)]
    assert report.summarize(records).sparsities == (0.50,)


def test_rows_measured_from_first_sparsity():
    # 0.58 is within 15% (remaining) of 0.54 but not of the row's first, 0.50.
    records = [_rec("snip", p, 0.8) for p in (0.50, 0.54, 0.58)]
    table = report.summarize(records)
    assert table.sparsities == (0.50, 0.58)
    assert table.get(SNIP, 0.50) == (0.8, 0.0, 2, 0.52)


def test_imp_levels_never_share_a_row():
    records = [_rec("imp", 0.2, 0.92, level=1), _rec("imp", 0.36, 0.90, level=2)]
    assert report.summarize(records, tolerance=0.5).sparsities == (0.2, 0.36)
    # All 15 levels of the paper's schedule stay apart, each with its ETT ticket (10% fewer weights) beside it.
    levels = [round(1 - 0.8 ** level, 4) for level in range(16)]
    records = [_rec("imp", p, 0.9, level=i) for i, p in enumerate(levels)]
    records += [_ett(round(1 - (1 - p) * 0.9, 4), 0.9, seed=0, level=i) for i, p in enumerate(levels)]
    table = report.summarize(records)
    assert table.sparsities == tuple(levels)
    assert all(table.get(ETT, p) is not None for p in levels)


def test_tolerance_changes_grouping():
    records = [_rec("snip", 0.50, 0.8), _rec("grasp", 0.58, 0.7)]
    assert report.summarize(records, tolerance=0.2).sparsities == (0.50,)
    # Tolerance 0: one row per distinct sparsity among tickets without an IMP level in the report.
    records = [_rec("snip", 0.2, 0.8, level=1), _rec("grasp", 0.2049, 0.7, level=1)]
    table = report.summarize(records, tolerance=0)
    assert table.sparsities == (0.2, 0.2049)
    assert "(at " not in report.to_markdown(table)
    # It never splits a ticket from the IMP level it comes from.
    assert report.summarize(_ett_records(), tolerance=0).sparsities == (0.2, 0.36)
    with pytest.raises(ValueError, match="tolerance"):
        report.summarize(records, tolerance=-0.01)


def test_same_series_two_sparsities_in_one_row_aggregates():
    records = [_rec("snip", 0.2, 0.92, level=1), _rec("snip", 0.36, 0.90, level=2)]
    table = report.summarize(records, tolerance=0.5)
    assert table.sparsities == (0.2,)
    cell = table.get(SNIP, 0.2)
    assert (cell.n, cell.sparsity) == (2, 0.28)
    assert cell.mean == pytest.approx(0.91, abs=1e-12)
    assert report.format_cell(cell, 0.2) == "91.00 ± 1.00 (n=2, at 28.00%)"


def test_format_cell_sparsity_note():
    cell = report.Cell(0.9248, 0.0031, 3, 0.2049)
    assert report.format_cell(cell) == "92.48 ± 0.31 (n=3)"
    assert report.format_cell(cell, 0.2) == "92.48 ± 0.31 (n=3, at 20.49%)"
    assert report.format_cell(report.Cell(0.9778, 0.0, 1, 0.2049), 0.2) == "97.78 (at 20.49%)"
    # Up to 0.0005 off the row label is not noted.
    assert report.format_cell(report.Cell(0.9778, 0.0, 1, 0.2005), 0.2) == "97.78"
    assert report.format_cell(report.Cell(0.9778, 0.0, 1, 0.2006), 0.2) == "97.78 (at 20.06%)"
    assert report.format_cell(None, 0.2) == ""


def test_plot_points_at_cell_sparsity():
    table = report.summarize(_ett_records())
    remaining, acc, _, n = plotting._series_points(table, ETT)
    assert remaining == pytest.approx([100 * (1 - 0.2049), 100 * (1 - 0.368)])
    assert acc == pytest.approx([97.78, 92.5]) and n == [1, 2]


def _assert_png(path):
    data = Path(path).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 10_000


def test_plot_writes_png(table, tmp_path):
    path = tmp_path / "plot.png"
    report.plot(table, path, title="resnet-32")
    _assert_png(path)


@pytest.mark.parametrize("name, columns", [("x", 3), ("x" * 20, 2), ("W" * 25, 1), ("x" * 60, 1)])
def test_plot_legend_sits_below_the_axes(name, columns):
    """However many series and however long their names, the legend hides no point and stays in the figure."""
    import matplotlib.pyplot as plt

    methods = [f"{chr(97 + i)}{name}" for i in range(9)]
    table = report.summarize([_rec(m, s, 0.9 - 0.01 * i) for i, m in enumerate(methods) for s in (0.0, 0.2, 0.36)])
    fig = report.figure(table, title="t")
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend = fig.legends[0].get_window_extent(renderer)
        axes = fig.axes[0].get_tightbbox(renderer)  # with tick labels and axis title
        assert legend.y1 <= axes.y0
        assert 0 <= legend.x0 and legend.x1 <= fig.bbox.x1 and legend.y0 >= 0
        assert fig.legends[0]._ncols == columns
        assert fig.get_size_inches()[1] == pytest.approx(5 + report.LEGEND_ROW_INCHES * -(-9 // columns))
    finally:
        plt.close(fig)


def test_plot_title_wraps_long_titles_only():
    long = "E-LTH with ImageNet ResNets 18, 26, 34 on Fashion-MNIST JPEGs: every transfer between them (3 seeds)"
    assert report.plot_title(long).split("\n") == [
        "E-LTH with ImageNet ResNets 18, 26, 34 on Fashion-MNIST JPEGs: every transfer", "between them (3 seeds)"]
    assert report.plot_title("resnet-32") == "resnet-32"
    assert report.plot_title(None) == "Test accuracy vs. sparsity"


def test_write_report(runs, tmp_path):
    out = tmp_path / "nested" / "out"
    markdown = report.write_report(runs, out, title="T")
    assert markdown.startswith("| sparsity % | remaining % |")
    assert "# T" in (out / "report.md").read_text()
    assert markdown in (out / "report.md").read_text()
    assert (out / "results.csv").read_text().startswith(
        "series,sparsity,row_sparsity,mean,std,n\n")
    _assert_png(out / "accuracy_vs_sparsity.png")


def test_main_tolerance_flag(tmp_path, capsys):
    path = _write(tmp_path / "results.json", [_rec("snip", 0.2, 0.8, level=1), _rec("grasp", 0.2049, 0.7, level=1)])
    assert report.main([str(path), "--out", str(tmp_path / "out"), "--tolerance", "0"]) == 0
    assert "| 20.49 | 79.51 | 70.00 |  |" in capsys.readouterr().out


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
    assert proc.returncode == 2
    assert proc.stderr.startswith("elax: error: ") and "nowhere" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_refuses_an_out_file_and_runs_without_records(tmp_path, capsys):
    run = _write(tmp_path / "run" / "results.json", [_rec("imp", 0.0, 0.9)]).parent
    (tmp_path / "taken").write_text("")
    assert report.main([str(run), "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err == (f"elax: error: --out {tmp_path / 'taken'} is a file; the report is a folder "
                                       "(report.md, results.csv, accuracy_vs_sparsity.png). Pass a folder.\n")
    assert report.main([str(run), "--out", ""]) == 2
    assert capsys.readouterr().err == ("elax: error: --out is empty; pass the folder to write the report into "
                                       "(default: ./report).\n")
    empty = _write(tmp_path / "empty" / "results.json", []).parent
    assert report.main([str(empty), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (f"elax: error: {empty}: no finished levels yet (every results.json found is "
                                       "empty). Report runs once they have finished a level.\n")


def test_a_run_read_twice_is_not_averaged_as_two_seeds(tmp_path):
    records = [_rec("imp", 0.0, 0.9), _rec("imp", 0.2, 0.91, level=1)]
    first, copy = (_write(tmp_path / name / "results.json", records) for name in ("run", "copy"))
    with pytest.raises(ValueError) as info:
        report.load_records([first.parent, copy.parent])
    assert str(info.value) == (f"{first} and {copy} both hold level 0 of {IMP} with seed 0: averaged they would "
                               "pass for two replicates. Report one of them (runs of other seeds differ in "
                               "--config.seed).")
    _write(copy, [dict(r, seed=1) for r in records])
    assert report.summarize(report.load_records([first.parent, copy.parent])).get(IMP, 0.2).n == 2


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


@pytest.mark.parametrize("key, value", [("test_accuracy", None), ("test_accuracy", "NaN"), ("test_accuracy", 95.0),
                                        ("test_accuracy", True), ("sparsity", 1.0), ("sparsity", -0.1)])
def test_record_values_out_of_range_are_named(tmp_path, key, value):
    record = {**_rec("imp", 0.2, 0.9), key: value}
    path = _write(tmp_path / "bad_run" / "results.json", [_rec("imp", 0.0, 0.9), record])
    with pytest.raises(ValueError) as info:
        report.load_records([tmp_path / "bad_run"])
    top = ")" if key == "sparsity" else "]"
    assert str(info.value) == (f"{path}: record 1 has {key} {value!r} outside [0, 1{top} (a fraction); the file is "
                               "damaged or was edited: restore it, or delete it and run that run's command again to "
                               "rebuild it")


def test_ett_record_missing_strategy(tmp_path):
    record = _ett(0.2, 0.9, 0, 1)
    del record["strategy"]
    _write(tmp_path / "results.json", [record])
    with pytest.raises(ValueError, match="strategy"):
        report.load_records(tmp_path / "results.json")


def test_ett_joins_its_source_level_however_far_its_sparsity_moved():
    # The quickstart's last level: IMP 96.88%, its ETT ticket 97.48% (19% fewer remaining weights).
    records = [_rec("imp", 0.9688, 0.9639, level=5), _ett(0.9748, 0.9722, 0, 5)]
    table = report.summarize(records)
    assert table.sparsities == (0.9688,)
    assert report.to_markdown(table).splitlines()[2] == "| 96.88 | 3.12 | 96.39 | 97.22 (at 97.48%) |"


def test_runs_of_different_recipes_are_never_averaged(tmp_path):
    from elax import config as config_lib, workdir as wd
    configs = [config_lib.default_config().to_dict(), config_lib.default_config().to_dict()]
    configs[1]["train"]["lr"] = 0.05
    for i, config in enumerate(configs):
        rid = wd.recipe_id(config)
        _write(tmp_path / f"run{i}" / "results.json", [_rec("imp", 0.2, 0.90 + i / 100, seed=i, recipe_id=rid)])
        wd.write_json(str(tmp_path / f"run{i}" / "config.json"), config)
    with pytest.raises(ValueError, match=r"2 different recipes, which are never averaged together: .*run0.*run1.* "
                                         r"\(they differ in train.lr: 0.1 vs 0.05\).*--mix-recipes"):
        report.load_records(tmp_path)
    table = report.summarize(report.load_records(tmp_path, mix_recipes=True))
    assert table.series == tuple(sorted(f"{IMP} [recipe {wd.recipe_id(c)}]" for c in configs))
    assert [table.get(s, 0.2).n for s in table.series] == [1, 1]
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert report.main([str(tmp_path), "--out", str(tmp_path / "out"), "--mix-recipes"]) == 0


def _claims_records():
    """Three seeds at one IMP level of the target: ETT, the target's IMP and a random baseline."""
    records = []
    for seed, (imp, ett, rnd) in enumerate([(0.90, 0.91, 0.80), (0.92, 0.90, 0.82), (0.91, 0.92, 0.81)]):
        records += [_rec("imp", 0.2, imp, seed=seed, level=1), _ett(0.21, ett, seed, 1),
                    _rec("random", 0.2, rnd, seed=seed, level=1),
                    _rec("imp", 0.2, 0.5, seed=seed, level=1, model="cifar_resnet_20")]   # another model: no claim
    return records


def test_claims_pair_seeds_and_compare_to_the_spread():
    imp_claim, random_claim = report.claims(_claims_records())
    assert (imp_claim.row, imp_claim.ett, imp_claim.other, imp_claim.n) == (0.2, ETT, IMP, 3)
    # ETT - IMP per seed: +0.01, -0.02, +0.01 -> mean 0, sample std 0.01732
    assert imp_claim.mean == pytest.approx(0.0, abs=1e-12)
    assert imp_claim.std == pytest.approx(0.017320508, rel=1e-6)
    assert (imp_claim.above, imp_claim.below, imp_claim.exceeds_spread) == (2, 1, False)
    # ETT - random per seed: +0.11, +0.08, +0.11 -> mean 0.1, std 0.01732; all three seeds above
    assert (random_claim.other, random_claim.above, random_claim.below) == ("random (cifar_resnet_32)", 3, 0)
    assert random_claim.mean == pytest.approx(0.10) and random_claim.exceeds_spread
    text = report.claims_markdown([imp_claim, random_claim])
    assert ("| 20.00 | ett cifar_resnet_20→cifar_resnet_32 (append) | random (cifar_resnet_32) | +10.00 ± 1.73 | 3 "
            "| 3 / 0 | yes |") in text
    assert "| imp (cifar_resnet_32) | +0.00 ± 1.73 | 3 | 2 / 1 | no |" in text


def test_claims_compare_the_ett_series_of_one_target_with_each_other_once():
    # A second strategy, 0.02 below append in every seed: append - interpolate = +0.02 ± 0.
    records = _claims_records() + [
        {**_ett(0.21, acc - 0.02, seed, 1), "strategy": "interpolate"}
        for seed, acc in enumerate((0.91, 0.90, 0.92))]
    append, interpolate = ("ett cifar_resnet_20→cifar_resnet_32 (append)",
                           "ett cifar_resnet_20→cifar_resnet_32 (interpolate)")
    pairs = [(c.ett, c.other) for c in report.claims(records)]
    assert pairs == [(append, IMP), (append, interpolate), (append, "random (cifar_resnet_32)"),
                     (interpolate, IMP), (interpolate, "random (cifar_resnet_32)")]
    between = report.claims(records)[1]
    assert between.mean == pytest.approx(0.02) and between.std == pytest.approx(0.0, abs=1e-12)
    assert (between.n, between.above, between.below, between.exceeds_spread) == (3, 3, 0, True)


def test_claims_with_one_seed_say_there_is_no_spread(tmp_path):
    records = [r for r in _claims_records() if r["seed"] == 0]
    claim = report.claims(records)[1]
    assert (claim.n, claim.std, claim.exceeds_spread) == (1, 0.0, False)
    assert f"| {100 * claim.mean:+.2f} | 1 | 1 / 0 | one seed |" in report.claims_markdown([claim])  # no "± 0.00"
    _write(tmp_path / "r" / "results.json", _claims_records())
    report.write_report([tmp_path / "r"], tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text()
    assert "## Claims" in md and "| random (cifar_resnet_32) | +10.00 ± 1.73 | 3 | 3 / 0 | yes |" in md
    assert (tmp_path / "out" / "accuracy_vs_sparsity.png").stat().st_size > 10_000
