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

pytestmark = pytest.mark.smoke   # the first look: python -m pytest -m smoke

REPO = Path(__file__).resolve().parents[1]
IMP = "imp (cifar_resnet_32)"
ETT = "ett cifar_resnet_20→cifar_resnet_32 (append)"
REINIT = "reinit (cifar_resnet_32)"
SNIP = "snip (cifar_resnet_32)"
# Their labels in figures and markdown (one target model: baselines do not name it).
LABELS = {IMP: "IMP ResNet-32", ETT: "ETT ResNet-20 → 32 (append)", REINIT: "Reinit", SNIP: "SNIP"}
HEADER = "| sparsity % | remaining % | IMP ResNet-32 | ETT ResNet-20 → 32 (append) |"

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
        f"{HEADER} Reinit | SNIP |\n"
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


CSV_HEADER = ["series", "label", "method", "model", "source", "strategy", "structure", "sparsity", "row_sparsity",
              "test_accuracy_mean_pct", "test_accuracy_std_pct", "n"]
# What each series is, in the CSVs: method, model, source, strategy, structure.
DESCRIBED = {IMP: ["imp", "cifar_resnet_32", "", "", "unstructured"],
             ETT: ["ett", "cifar_resnet_32", "cifar_resnet_20", "append", "unstructured"],
             REINIT: ["reinit", "cifar_resnet_32", "", "", "unstructured"],
             SNIP: ["snip", "cifar_resnet_32", "", "", "unstructured"]}


def _csv_rows(table):
    """The CSV's lines as (series, sparsity, row_sparsity, mean %, std %, n) strings, after checking the header
    and the label and description columns."""
    rows = list(csv.reader(io.StringIO(report.to_csv(table))))
    assert rows[0] == CSV_HEADER
    for row in rows[1:]:
        assert row[1] == LABELS[row[0]] and row[2:7] == DESCRIBED[row[0]]
    return [(r[0], *r[7:]) for r in rows[1:]]


def test_to_csv_rows(table):
    # Percent with 2 decimals, fractions with 4; one record has no spread (empty std), not a spread of 0.
    assert _csv_rows(table) == [
        (IMP, "0.0000", "0.0000", "93.00", "0.82", "3"),
        (IMP, "0.2000", "0.2000", "92.00", "1.41", "3"),
        (IMP, "0.3600", "0.3600", "90.00", "0.00", "3"),
        (ETT, "0.2000", "0.2000", "91.00", "1.00", "2"),
        (ETT, "0.3600", "0.3600", "88.50", "0.50", "2"),
        (REINIT, "0.2000", "0.2000", "80.00", "", "1"),
        (SNIP, "0.3600", "0.3600", "85.00", "", "1"),
    ]


def test_csv_rounds_away_float32_noise():
    # float32 values as results.json holds them: 0.2 is 0.20000000298..., 0.9248 is 0.92479997873...
    records = [_rec("imp", 0.20000000298023224, 0.9247999787330627, seed=s, level=1) for s in (0, 1)]
    records.append(_ett(0.2048999965190887, 0.9778000116348267, 0, 1))
    assert _csv_rows(report.summarize(records)) == [(IMP, "0.2000", "0.2000", "92.48", "0.00", "2"),
                                                    (ETT, "0.2049", "0.2000", "97.78", "", "1")]


def test_per_seed_csv(runs):
    root, baselines = runs
    records = report.load_records([root, baselines])
    rows = list(csv.DictReader(io.StringIO(report.to_seed_csv(records))))
    assert list(rows[0]) == ["series", "method", "model", "source", "strategy", "structure", "seed", "level",
                             "sparsity", "row_sparsity", "test_accuracy_pct"]
    assert len(rows) == len(records) == 15
    # Series order, then row, level and seed; the 0.2000001 ticket is in the 0.2 row, rounded.
    assert [(r["series"], r["seed"], r["level"], r["sparsity"], r["test_accuracy_pct"]) for r in rows[:6]] == [
        (IMP, "0", "0", "0.0000", "92.00"), (IMP, "1", "0", "0.0000", "93.00"), (IMP, "2", "0", "0.0000", "94.00"),
        (IMP, "0", "1", "0.2000", "91.00"), (IMP, "1", "1", "0.2000", "91.00"), (IMP, "2", "1", "0.2000", "94.00")]
    ett = [r for r in rows if r["series"] == ETT]
    assert [(r["seed"], r["sparsity"], r["row_sparsity"], r["test_accuracy_pct"]) for r in ett] == [
        ("0", "0.2000", "0.2000", "90.00"), ("1", "0.2000", "0.2000", "92.00"),
        ("0", "0.3600", "0.3600", "88.00"), ("1", "0.3600", "0.3600", "89.00")]
    assert [ett[0][k] for k in ("method", "model", "source", "strategy", "structure")] == DESCRIBED[ETT]
    assert [r["series"] for r in rows[-2:]] == [REINIT, SNIP]


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
        f"{HEADER}\n"
        "|---:|---:|---:|---:|\n"
        "| 20.00 | 80.00 | 92.00 ± 1.00 (n=2) | 97.78 (at 20.49%) |\n"
        "| 36.00 | 64.00 | 90.00 | 92.50 ± 0.50 (n=2, at 36.80%) |\n"
    )
    assert table.get(ETT, 0.2).sparsity == 0.2049
    assert table.get(ETT, 0.36).sparsity == 0.368


def test_ett_shares_imp_rows_csv():
    assert _csv_rows(report.summarize(_ett_records())) == [
        (IMP, "0.2000", "0.2000", "92.00", "1.00", "2"),
        (IMP, "0.3600", "0.3600", "90.00", "", "1"),
        (ETT, "0.2049", "0.2000", "97.78", "", "1"),
        (ETT, "0.3680", "0.3600", "92.50", "0.50", "2"),
    ]


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


def _assert_pdf_and_svg(png_path):
    pdf, svg = png_path.with_suffix(".pdf"), png_path.with_suffix(".svg")
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 1000
    assert "<svg" in svg.read_text(encoding="utf-8") and svg.stat().st_size > 1000


def test_plot_writes_png_pdf_and_svg(table, tmp_path):
    path = tmp_path / "plot.png"
    assert report.plot(table, path, title="resnet-32") == [path, tmp_path / "plot.pdf", tmp_path / "plot.svg"]
    _assert_png(path)
    _assert_pdf_and_svg(path)


@pytest.mark.parametrize("model, label", [
    ("cifar_resnet_20", "ResNet-20"), ("cifar_resnet_20_8", "ResNet-20 (w8)"), ("cifar_resnet_56_16", "ResNet-56"),
    ("cifar_vgg_16", "VGG-16"), ("cifar_vgg_19_32", "VGG-19 (w32)"), ("imagenet_resnet_18", "ResNet-18"),
    ("imagenet_resnet_50_8", "ResNet-50 (w8)"), ("vit_6_64_p7", "ViT-6 (64, p7)"),
    ("vit_4_64_p4_h4_gap", "ViT-4 (64, p4, h4, gap)"), ("mlp_300_100", "MLP 300-100"), ("mlp_4x300", "MLP 4x300"),
    ("my_resnet_v2", "my_resnet_v2"), ("cifar_resnet_20x", "cifar_resnet_20x")])
def test_model_labels_of_each_family(model, label):
    assert str(report.model_label(model)) == label


@pytest.mark.parametrize("method, label", [
    ("imp", "IMP"), ("ett", "ETT"), ("random", "Random"), ("reinit", "Reinit"), ("snip", "SNIP"), ("grasp", "GraSP"),
    ("synflow", "SynFlow"), ("magnitude", "One-shot magnitude"), ("rigl", "RigL"), ("set", "SET"),
    ("my_method", "my_method")])
def test_method_labels(method, label):
    assert report.method_label(method) == label


def _labels(records):
    table = report.summarize(records)
    return [report.series_labels(table)[s] for s in table.series]


def test_series_labels_of_a_report():
    records = [_rec("imp", 0.2, 0.9, level=1, model=m) for m in ("cifar_resnet_14_8", "cifar_resnet_20_8")]
    records += [{**_ett(0.2, 0.9, 0, 1), "source_model": "cifar_resnet_14_8", "model": "cifar_resnet_20_8"}]
    records += [_rec(m, 0.2, 0.8, level=1, model="cifar_resnet_20_8") for m in ("random", "magnitude", "synflow")]
    assert _labels(records) == ["IMP ResNet-14 (w8)", "IMP ResNet-20 (w8)", "ETT ResNet-14 → 20 (w8, append)",
                                "One-shot magnitude", "Random", "SynFlow"]
    # Across families (or widths) the target is named in full.
    cross = {**_ett(0.2, 0.9, 0, 1), "source_model": "cifar_vgg_16"}
    assert _labels([cross]) == ["ETT VGG-16 → ResNet-32 (append)"]
    assert _labels([_ett(0.2, 0.9, 0, 1)]) == ["ETT ResNet-20 → 32 (append)"]


def test_baselines_name_their_model_where_the_report_has_several_targets():
    records = [_rec("imp", 0.2, 0.9, level=1, model=m) for m in ("cifar_resnet_20", "cifar_resnet_32")]
    records += [_rec("snip", 0.2, 0.8, level=1, model=m) for m in ("cifar_resnet_20", "cifar_resnet_32")]
    assert _labels(records) == ["IMP ResNet-20", "IMP ResNet-32", "SNIP ResNet-20", "SNIP ResNet-32"]
    # A source (ResNet-20 here, with IMP only) is no target: one target, baselines unnamed.
    records = [_rec("imp", 0.2, 0.9, level=1, model=m) for m in ("cifar_resnet_20", "cifar_resnet_32")]
    records += [_ett(0.2, 0.9, 0, 1), _rec("snip", 0.2, 0.8, level=1)]
    table = report.summarize(records)
    assert (report.sources(table), report.targets(table)) == ({"cifar_resnet_20"}, {"cifar_resnet_32"})
    assert _labels(records)[-1] == "SNIP"


def test_labels_of_structures_recipes_and_collisions():
    # N:M tickets are series of their own, labelled with their structure.
    records = [_rec("imp", 0.5, 0.9, level=1), _rec("imp", 0.5, 0.85, level=1, structure="2:4")]
    table = report.summarize(records)
    assert table.series == (IMP, f"{IMP} [2:4]") and _labels(records) == ["IMP ResNet-32", "IMP ResNet-32, 2:4"]
    # Several recipes: each label names its recipe.
    records = [_rec("imp", 0.5, 0.9, recipe_id="aaaa"), _rec("imp", 0.5, 0.9, recipe_id="bbbb")]
    assert _labels(records) == ["IMP ResNet-32 [recipe aaaa]", "IMP ResNet-32 [recipe bbbb]"]
    # One model by two names would give two series one label: both keep their names.
    records = [_rec("imp", 0.5, 0.9, model="cifar_resnet_32_16"), _rec("imp", 0.5, 0.9)]
    assert _labels(records) == ["imp (cifar_resnet_32)", "imp (cifar_resnet_32_16)"]


def _figure_records():
    """Target IMP (ResNet-32, 3 seeds), ETT 20→32 (3 seeds), the source's IMP (ResNet-20, 2 seeds), random
    (1 seed)."""
    records = []
    for seed in range(3):
        records += [_rec("imp", s, a - seed / 100, seed=seed, level=level)
                    for level, (s, a) in enumerate(((0.0, 0.93), (0.2, 0.92), (0.36, 0.90)))]
        records += [_ett(0.2049, 0.925, seed, 1), _ett(0.368, 0.91, seed, 2)]
    for seed in range(2):
        records += [_rec("imp", s, a, seed=seed, level=level, model="cifar_resnet_20")
                    for level, (s, a) in enumerate(((0.0, 0.92), (0.2, 0.915), (0.36, 0.89)))]
    return records + [_rec("random", 0.2, 0.85, level=1), _rec("random", 0.36, 0.80, level=2)]


def _lines(fig):
    """{legend label: Line2D} of the axes (error bar caps have no label of their own)."""
    return {line.get_label(): line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")}


def test_figure_styles_markers_and_the_dashed_source():
    import matplotlib.pyplot as plt

    fig = report.figure(report.summarize(_figure_records()))
    try:
        lines = _lines(fig)
        series = ["IMP ResNet-32", "IMP ResNet-20", "ETT ResNet-20 → 32 (append)", "Random"]
        assert set(lines) == {*series, "Dense ResNet-32"}
        markers = [lines[s].get_marker() for s in series]
        assert len(set(markers)) == len(series)
        assert len({lines[s].get_color() for s in series}) == len(series)
        assert {lines[s].get_color() for s in series} <= set(plotting.PALETTE)
        # The line style says the role: the source's IMP dashed, the target's IMP and ETT solid, baselines -.
        assert [lines[s].get_linestyle() for s in series] == ["-", "--", "-", "-."]
        assert fig.axes[0].get_title() == "Test accuracy vs. sparsity, n = 1-3 seeds"
    finally:
        plt.close(fig)


def test_styles_stay_distinct_for_many_series():
    table = report.summarize([_rec(f"method{i:02}", 0.2, 0.9) for i in range(24)])
    styles = report.series_styles(table)
    assert len({(s["color"], s["marker"]) for s in styles.values()}) == 24
    assert len({s["marker"] for s in list(styles.values())[:12]}) == 12


def test_dense_line_per_target_model():
    import matplotlib.pyplot as plt

    records = _figure_records() + [_rec("imp", 0.0, 0.95, seed=s, level=0, model="cifar_vgg_16") for s in (0, 1)]
    records += [_rec("imp", 0.2, 0.94, level=1, model="cifar_vgg_16")]
    table = report.summarize(records)
    # IMP level 0's mean for each target; none for the source, ResNet-20.
    assert [(label, round(acc, 6)) for label, acc, _ in report.dense_lines(table)] == [
        ("Dense ResNet-32", 92.0), ("Dense VGG-16", 95.0)]
    fig = report.figure(table)
    try:
        lines = _lines(fig)
        for label, accuracy, series in report.dense_lines(table):
            assert list(lines[label].get_ydata()) == [accuracy, accuracy]
            assert lines[label].get_linestyle() == ":"
            assert lines[label].get_color() == lines[report.series_labels(table)[series]].get_color()
        assert "Dense ResNet-20" not in lines
    finally:
        plt.close(fig)


def test_y_range_leaves_out_far_outliers_below():
    # A ticket collapsed to 10% would squash the others into a few pixels.
    points = [(93.0, 0.8), (92.0, 1.4), (90.0, 0.0), (91.0, 1.0), (88.5, 0.5), (10.0, 0.0)]
    low, high, hidden = report.y_range(points)
    # Lowest mean - std of the rest 88.0, highest mean + std 93.8; padding 5% of 5.8, at least 0.5 pp.
    assert (low, high, hidden) == (pytest.approx(87.5), pytest.approx(94.3), 1)
    # A gradual decline is no outlier: all of it is shown.
    decline = [(93.0 - 5 * i, 0.0) for i in range(10)]
    assert report.y_range(decline) == (pytest.approx(48.0 - 2.25), pytest.approx(93.0 + 2.25), 0)
    # Nearly equal points: the IQR counts as at least 1 pp, so 88 beside four 90s stays.
    assert report.y_range([(90.0, 0.0)] * 4 + [(88.0, 0.0)])[2] == 0
    # Fewer than 4 values: no outliers; dense lines count; kept within [0, 100].
    assert report.y_range([(10.0, 0.0), (99.9, 0.3)], lines=[99.8]) == (pytest.approx(5.49), 100.0, 0)


def test_figure_y_range_and_its_note():
    import matplotlib.pyplot as plt

    records = _figure_records() + [_rec("random", 0.59, 0.10, level=3)]
    fig = report.figure(report.summarize(records))
    try:
        # 10% is left out; the rest is shown: from random's 80% to IMP's 92.82 (92 + 0.82 std), padded 5%.
        assert fig.axes[0].get_ylim() == (pytest.approx(80 - 0.641, abs=1e-3), pytest.approx(92.816 + 0.641, abs=1e-3))
        assert [t.get_text() for t in fig.axes[0].texts] == ["1 point below the y-range"]
    finally:
        plt.close(fig)
    fig = report.figure(report.summarize(records), ylim=(0, 100))
    try:
        assert fig.axes[0].get_ylim() == (0, 100) and len(fig.axes[0].texts) == 0
    finally:
        plt.close(fig)


def test_plot_title_counts_seeds():
    assert report.plot_title("T", [3, 3]) == "T, 3 seeds"
    assert report.plot_title("T", [1]) == "T, 1 seed"
    assert report.plot_title("T", [1, 3, 2]) == "T, n = 1-3 seeds"
    assert report.plot_title(None, [2]) == "Test accuracy vs. sparsity, 2 seeds"
    assert report.plot_title("E-LTH on Fashion-MNIST (3 seeds)", [3]) == "E-LTH on Fashion-MNIST (3 seeds)"


@pytest.mark.parametrize("name, columns", [("x", 3), ("x" * 38, 2), ("W" * 35, 1), ("x" * 60, 1)])
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
    assert (out / "results.csv").read_text().startswith(",".join(CSV_HEADER) + "\n")
    assert (out / "results_per_seed.csv").read_text().count("\n") == 1 + 15
    _assert_png(out / "accuracy_vs_sparsity.png")
    _assert_pdf_and_svg(out / "accuracy_vs_sparsity.png")
    assert sorted(os.listdir(out)) == sorted(report.REPORT_FILES) == [
        "accuracy_vs_sparsity.pdf", "accuracy_vs_sparsity.png", "accuracy_vs_sparsity.svg", "report.md",
        "results.csv", "results_per_seed.csv"]


def test_ylim_reaches_the_plot(runs, tmp_path, monkeypatch, capsys):
    from elax.report import write

    got = []
    monkeypatch.setattr(write, "plot", lambda table, path, title=None, ylim=None: got.append(ylim))
    root, _ = runs
    assert report.main([str(root), "--out", str(tmp_path / "a"), "--ylim", "80,95.5"]) == 0
    report.write_report([root], tmp_path / "b", ylim=[70, 100])
    assert report.main([str(root), "--out", str(tmp_path / "c")]) == 0
    assert got == [(80.0, 95.5), (70.0, 100.0), None]
    capsys.readouterr()
    for bad, says in (("95,80", "0 <= LOW < HIGH <= 100"), ("80", "give LOW,HIGH"), ("a,b", "give LOW,HIGH")):
        assert report.main([str(root), "--out", str(tmp_path / "d"), "--ylim", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("elax: error: ") and says in err
    assert not (tmp_path / "d").exists()   # refused before anything is written


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
    for name in report.REPORT_FILES:
        assert (out / name).is_file()
        assert f"wrote {out / name}\n" in proc.stdout


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
                               "config.seed).")
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
    # In the report the claims name series by their labels.
    assert "## Claims" in md and "| ETT ResNet-20 → 32 (append) | Random | +10.00 ± 1.73 | 3 | 3 / 0 | yes |" in md
    assert (tmp_path / "out" / "accuracy_vs_sparsity.png").stat().st_size > 10_000
