"""elax.workdir: atomic strict JSON, damaged files named, the recipe identity, claiming a workdir."""

import os
import shutil

import pytest

from elax import config as config_lib, workdir as wd

pytestmark = pytest.mark.smoke   # the first look: python -m pytest -m smoke


def config_dict(**changes):
    c = config_lib.default_config()
    for key, value in changes.items():
        section, name = key.split(".")
        c[section][name] = value
    return c.to_dict()


def test_recipe_id_changes_with_result_changing_keys_only():
    base = wd.recipe_id(config_dict())
    assert len(base) == 10 and base == wd.recipe_id(config_dict())
    for key, value in {"train.lr": 0.05, "data.name": "digits", "lottery.rewind_steps": 5, "train.milestones": (9,),
                       "data.train_subset": 100, "train.dtype": "bfloat16"}.items():
        assert wd.recipe_id(config_dict(**{key: value})) != base, key
    for key, value in {"lottery.levels": 3, "train.eval_batch_size": 10, "progress": False, "data.dir": "/x",
                       "model.name": "cifar_resnet_56", "train.steps_per_call": 7}.items():
        changed = config_dict(**{key: value}) if "." in key else {**config_dict(), key: value}
        assert wd.recipe_id(changed) == base, key
    seeded = {**config_dict(), "seed": 3}
    assert wd.recipe_id(seeded) == base
    assert wd.recipe_differences(config_dict(), config_dict(**{"train.lr": 0.05})) == ["train.lr: 0.1 vs 0.05"]


def test_claim_writes_the_recipe_id_and_refuses_another_config(tmp_path):
    workdir = str(tmp_path / "run")
    wd.claim(workdir, config_dict())
    saved = wd.run_config(workdir)
    assert saved["recipe_id"] == wd.recipe_id(config_dict())
    wd.claim(workdir, config_dict(**{"lottery.levels": 20}))   # extending a run is a resume
    with pytest.raises(ValueError, match=r"different config \(train.lr: 0.1 -> 0.2\)"):
        wd.claim(workdir, config_dict(**{"train.lr": 0.2}))


def test_claim_resumes_a_run_whose_config_holds_tuples_of_tuples(tmp_path):
    """config.json holds lists: layer_fractions (("head", 0.25),) comes back [["head", 0.25]], the same config."""
    workdir, pairs = str(tmp_path / "run"), (("head", 0.25),)
    wd.claim(workdir, config_dict(**{"lottery.layer_fractions": pairs}))
    wd.claim(workdir, config_dict(**{"lottery.layer_fractions": pairs}))
    assert wd.run_config(workdir)["recipe_id"] == wd.recipe_id(config_dict(**{"lottery.layer_fractions": pairs}))
    with pytest.raises(ValueError, match=r"different config \(lottery.layer_fractions: \[\['head', 0.25\]\] -> "
                                         r"\[\['head', 0.5\]\]\)"):
        wd.claim(workdir, config_dict(**{"lottery.layer_fractions": (("head", 0.5),)}))


def test_claim_takes_the_source_run_by_where_it_is_not_how_its_path_is_spelt(tmp_path, monkeypatch):
    (tmp_path / "exp" / "imp_a").mkdir(parents=True)
    os.symlink(tmp_path / "exp", tmp_path / "link")
    monkeypatch.chdir(tmp_path)
    workdir = str(tmp_path / "exp" / "ett")
    wd.claim(workdir, {**config_dict(**{"transfer.source": "exp/imp_a"}), "mode": "transfer"})
    for spelling in (str(tmp_path / "exp" / "imp_a"), "exp/./imp_a", str(tmp_path / "link" / "imp_a")):
        wd.claim(workdir, {**config_dict(**{"transfer.source": spelling}), "mode": "transfer"})
    # The config keeps the last spelling it was claimed with.
    with pytest.raises(ValueError, match=r"different config \(transfer.source: '.*/link/imp_a' -> 'exp/imp_b'\)"):
        wd.claim(workdir, {**config_dict(**{"transfer.source": "exp/imp_b"}), "mode": "transfer"})



def test_claim_takes_the_source_run_that_moved_with_the_folder(tmp_path):
    def claim(exp, source):
        wd.claim(str(tmp_path / exp / "seed_0" / "ett"),
                 {**config_dict(**{"transfer.source": str(tmp_path / source)}), "mode": "transfer"})

    claim("exp", "exp/seed_0/imp_a")
    os.rename(tmp_path / "exp", tmp_path / "moved")
    claim("moved", "moved/seed_0/imp_a")    # the experiment moved as a whole: the same run where it now is
    shutil.copytree(tmp_path / "moved", tmp_path / "copy")
    claim("copy", "copy/seed_0/imp_a")      # and in a copy
    for other in ("moved/seed_0/imp_b", "elsewhere/seed_0/imp_a", "moved/imp_a"):
        with pytest.raises(ValueError, match=r"different config \(transfer.source: '.*/moved/seed_0/imp_a' -> "):
            claim("moved", other)

def test_claim_ignores_the_sections_a_run_of_its_mode_never_reads(tmp_path):
    # An experiment's IMP runs serve a second experiment with another strategy and baselines (same workdir).
    other_options = {"transfer.strategy": "drop_last", "baseline.method": "snip"}
    cases = (("imp", other_options, None),      # mode, changes it ignores, a key it reads
             ("transfer", {"baseline.method": "snip"}, "transfer.strategy"),
             ("baseline", {"transfer.strategy": "drop_last"}, "baseline.method"))
    for mode, ignored, read in cases:
        workdir = str(tmp_path / mode)
        wd.claim(workdir, {**config_dict(), "mode": mode})
        wd.claim(workdir, {**config_dict(**ignored), "mode": mode})
        if read:
            with pytest.raises(ValueError, match=rf"different config \({read}: "):
                wd.claim(workdir, {**config_dict(**{read: other_options[read]}), "mode": mode})


def test_records_are_replaced_by_level_and_found(tmp_path):
    workdir = str(tmp_path)
    wd.add_record(workdir, {"level": 2, "method": "imp"})
    wd.add_record(workdir, {"level": 0, "method": "imp"})
    wd.add_record(workdir, {"level": 2, "method": "imp", "x": 1})
    assert wd.load_results(workdir) == [{"level": 0, "method": "imp"}, {"level": 2, "method": "imp", "x": 1}]
    assert wd.find_record(workdir, 2)["x"] == 1 and wd.find_record(workdir, 1) is None
    assert wd.imp_levels(wd.load_results(workdir), minimum=1) == [2]


def test_results_are_strict_json(tmp_path):
    with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
        wd.write_json(str(tmp_path / "r.json"), [{"test_accuracy": float("nan")}])
    assert os.listdir(tmp_path) == []


def test_a_damaged_json_file_is_named(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('[{"level": 1,')
    with pytest.raises(ValueError, match=rf"{path} is damaged \(Expecting"):
        wd.read_json(str(path))


def test_layout_paths():
    assert wd.ticket_dir("w", 3) == os.path.join("w", "level_03", "ticket")
    assert wd.checkpoints_dir("w", 0) == os.path.join("w", "level_00", "checkpoints")
    assert wd.metrics_path("w", 12) == os.path.join("w", "level_12", "metrics.jsonl")
    assert wd.rewind_dir("w") == os.path.join("w", "rewind")


def test_write_json_atomic(tmp_path):
    path = tmp_path / "sub" / "dir" / "results.json"
    wd.write_json(str(path), [{"level": 1, "sparsity": 0.2}])
    assert wd.read_json(str(path)) == [{"level": 1, "sparsity": 0.2}]
    wd.write_json(str(path), {"b": 2, "a": [1, 2]})
    assert wd.read_json(str(path)) == {"a": [1, 2], "b": 2}
    assert path.read_text().endswith("\n")
    assert os.listdir(path.parent) == ["results.json"]
    assert wd.read_json(str(tmp_path / "none.json"), default=[]) == []
    assert wd.read_json(str(tmp_path / "none.json")) is None


def test_write_json_failure_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "results.json"
    wd.write_json(str(path), {"ok": 1})
    with pytest.raises(TypeError):
        wd.write_json(str(path), {"bad": object()})   # not JSON serialisable, fails mid-write
    assert wd.read_json(str(path)) == {"ok": 1}
    assert os.listdir(tmp_path) == ["results.json"]
