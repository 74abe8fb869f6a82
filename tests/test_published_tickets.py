"""The published tickets (tickets/, written by `python -m elax.tickets publish`): every file loads, with its trained
weights, and says what its table row says; where Fashion-MNIST is installed, trained weights reproduce the recorded
test accuracy. Evaluating a ticket costs seconds of a cold suite, so by default one file per table is measured: the
sparsest level of its first ETT run (a ticket elax made by transfer, where a wrong mask would show most);
ELAX_TEST_ALL_TICKETS=1 measures every file."""

import glob
import os
import re

import jax
import numpy as np
import pytest

from elax import data, tickets
from elax.data import DataNotFoundError

from conftest import ROOT

PUBLISHED = os.path.join(ROOT, "tickets")
TABLES = sorted(glob.glob(os.path.join(PUBLISHED, "*", "tickets.md")))
FILES = sorted(glob.glob(os.path.join(PUBLISHED, "**", "level_*.safetensors*"), recursive=True))
ROW = re.compile(r"^\| `(?P<file>[^`]+)` \| (?P<model>\S+) \| (?P<method>[^|]+) \| (?P<level>\d+) \| "
                 r"(?P<sparsity>[\d.]+) \| (?P<accuracy>[\d.]+) \| (?P<recipe>\w+) \|$")


def table_rows() -> dict:
    """{file path: row} of every published table."""
    rows = {}
    for table in TABLES:
        for line in open(table):
            match = ROW.match(line.strip())
            if match:
                rows[os.path.join(os.path.dirname(table), match["file"])] = match.groupdict()
    return rows


def sparsest_of_first_ett_run_of_each_table() -> list[str]:
    chosen = {}
    for path in FILES:   # sorted: a table's first ETT run comes first, and level_NN sorts by level
        run = os.path.dirname(path)
        table = os.path.relpath(path, PUBLISHED).split(os.sep)[0]
        if os.path.basename(run).startswith("ett_") and chosen.get(table, (run,))[0] == run:
            chosen[table] = (run, path)
    return [path for _, path in chosen.values()]


def test_every_published_file_has_its_row_and_every_row_its_file():
    assert len(FILES) >= 18 and len(TABLES) >= 1 and len(sparsest_of_first_ett_run_of_each_table()) >= 1
    assert sorted(table_rows()) == FILES


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(p, PUBLISHED))
def test_a_published_ticket_loads_and_says_what_its_row_says(path):
    row, ticket = table_rows()[path], tickets.load(path)
    meta = ticket.meta
    assert (ticket.model_name, ticket.level, meta["recipe_id"]) == (row["model"], int(row["level"]), row["recipe"])
    assert f"{100 * meta['sparsity']:.2f}" == row["sparsity"]
    assert f"{100 * meta['test_accuracy']:.2f}" == row["accuracy"]
    # The ImageNet ResNets' data: Fashion-MNIST as a folder of JPEGs (docs/results/fashion_mnist_imagenet_resnet).
    dataset = "imagefolder" if meta["family"].startswith("imagenet_resnet") else "fashion_mnist"
    assert meta["seed"] == 0 and meta["trained"] and meta["dataset"] == dataset
    trained = tickets.load_trained(path)["params"]
    for kept, weights in zip(jax.tree.leaves(ticket.mask), jax.tree.leaves(trained), strict=True):
        assert np.all(np.asarray(weights)[~np.asarray(kept)] == 0)   # pruned weights stayed zero through training


@pytest.fixture(scope="module")
def fashion_mnist():
    try:
        return data.load("fashion_mnist")
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install -y dataset-fashion-mnist)")


MEASURED = FILES if os.environ.get("ELAX_TEST_ALL_TICKETS") else sparsest_of_first_ett_run_of_each_table()


@pytest.mark.parametrize("path", MEASURED, ids=lambda p: os.path.relpath(p, PUBLISHED))
def test_trained_weights_reproduce_the_recorded_accuracy(path, fashion_mnist):
    meta = tickets.info(path)
    data_dir = None
    if meta["dataset"] == "imagefolder":
        data_dir = os.environ.get("ELAX_FASHION_JPEGS")
        if not data_dir:
            pytest.skip("ELAX_FASHION_JPEGS is not set: the folder of Fashion-MNIST JPEGs these tickets trained on "
                        "(docs/results/fashion_mnist_imagenet_resnet/README.md writes it)")
    # Within 2 of the 10,000 test images: another CPU's kernels may round a borderline logit the other way.
    assert tickets.evaluate(path, data_dir)["accuracy"] == pytest.approx(meta["test_accuracy"], abs=2e-4)
