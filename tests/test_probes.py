"""The hostile user's probes (bad configs, damaged files, divergence, two processes, paths), table-driven and in
process through `elax.cli.main`, which main.py runs: each probe's exit code, the words of its one-line message,
and that no finished level is lost. Damaged-file probes work on copies of the shared tiny IMP run. Those that need
a process of their own (signals, Grain workers, main.py's flag parsing) run a small one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from elax import checkpoint, cli, runs, workdir as wd
from conftest import ROOT, tiny_config


def run_cli(capsys, config, workdir):
    """(exit code, stdout, stderr) of `elax.cli.main`, as main.py would print them."""
    code = cli.main(config, str(workdir))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("elax: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- bad input: refused before the workdir is claimed ---------------------------------------------------------------

CONFIG_PROBES = [
    ({"data.name": "imagenet"}, "config.data.name: unknown dataset 'imagenet'"),
    ({"lottery.levels": -1}, "config.lottery.levels: must be >= 0"),
    ({"lottery.prune_fraction": 1.5}, "config.lottery.prune_fraction: must be in (0, 1)"),
    ({"train.lr": float("nan")}, "config.train.lr: must be a finite number > 0, got nan"),
    ({"train.lr": float("inf")}, "config.train.lr: must be a finite number > 0"),
    ({"train.gamma": -1.0}, "config.train.gamma: must be in (0, 1]"),
    ({"train.warmup_epochs": -1.0}, "config.train.warmup_epochs: must be a finite number >= 0, got -1.0"),
    ({"train.warmup_epochs": float("inf")}, "config.train.warmup_epochs: must be a finite number >= 0, got inf."),
    ({"train.warmup_epochs": 3.0}, "config.train.warmup_epochs: 3.0 is longer than the training (2 epochs)."),
    ({"seed": 2**70}, "config.seed: must be a whole number in [0, 4294967295], got 1180591620717411303424."),
    ({"train.momentum": 1.5}, "config.train.momentum: must be in [0, 1) (SGD's momentum; the paper uses 0.9), got 1.5"),
    ({"train.weight_decay": -1e-4}, "config.train.weight_decay: must be a finite number >= 0, got -0.0001"),
    ({"train.milestones": (0,)}, "config.train.milestones: must be increasing epochs > 0, got (0,)"),
    ({"train.eval_every_epochs": 0}, "config.train.eval_every_epochs: must be >= 1"),
    ({"train.steps_per_call": -1}, "config.train.steps_per_call: must be >= 0"),
    ({"train.eval_batch_size": 0}, "config.train.eval_batch_size: must be > 0"),
    ({"model.name": "cifar_resnet_14_0"}, "config.model.name: CIFAR ResNet width must be >= 1"),
    ({"lottery.rewind_steps": 24}, "config.lottery.rewind_steps: 24 is not before the end of training"),
    ({"train.batch_size": 5000}, "config.train.batch_size: 5000 is larger than the 1437 training images"),
    ({"lottery.prune_fraction": 0.99, "lottery.levels": 4}, "levels=4: with prune_fraction 0.99, level 3 would leave no weight in the network"),
    ({"lottery.scope": "layer", "lottery.prune_fraction": 0.9, "lottery.levels": 3},
     "level 3 would leave no weight in head/kernel"),
    ({"data.train_subset": 99999}, "--config.data.train_subset: size 99999 is outside 1..1437, the 1437 training "
                                   "images of digits (0 keeps them all)."),
    ({"data.pad_to": -1}, "config.data.pad_to: must be >= 0 (0 = images as they are), got -1."),
    ({"lottery.exclude": ("hed",)}, "--config.lottery.exclude: 'hed' names no layer that cifar_resnet_14_4 prunes. "
                                   "Its prunable layers: head, stage1_block0/conv1, stage1_block0/conv2, "
                                   "stage1_block1/conv1, stage1_block1/conv2, stage2_block0/conv1, "
                                   "stage2_block0/conv2, stage2_block0/shortcut_conv, ... (16 in all)."),
    ({"lottery.layer_fractions": (("head", 1.5),)}, "--config.lottery.layer_fractions: must be (path prefix, "
                                                    "fraction in (0, 1)) pairs, got ('head', 1.5)."),
    ({"lottery.layer_fractions": (("stem", 0.5),)}, "--config.lottery.layer_fractions: 'stem' names no layer"),
    ({"data.pad_to": 4}, "--config.data.pad_to: side 4 is smaller than the 8x8 images of digits: use 0 (as they "
                         "are) or at least 8."),
    ({"data.name": "imagefolder", "data.dir": "/x", "data.pad_to": 256},
     "config.data.pad_to: applies to datasets held in memory, not to imagefolder"),
    ({"mode": "baseline", "baseline.method": "lottery", "baseline.reference": "/x"},
     "config.baseline.method: unknown baseline 'lottery'"),
    ({"mode": "experiment", "experiment.seeds": (0, 0)}, "config.experiment.seeds: must be distinct integers"),
    ({"mode": "experiment", "experiment.seeds": (True,)}, "config.experiment.seeds: must be distinct integers"),
    ({"mode": "experiment", "experiment.concurrent_runs": -1},
     "config.experiment.concurrent_runs: must be an integer >= 0, got -1"),
    ({"mode": "experiment", "experiment.target_models": ()},
     "config.experiment.target_models: must be one or more distinct models other than the source "
     "'cifar_resnet_14_8', got ()"),
    ({"mode": "experiment", "experiment.source_model": "cifar_resnet_20_8"},
     "other than the source 'cifar_resnet_20_8', got ('cifar_resnet_20_8',)"),
    ({"mode": "experiment", "experiment.target_models": ("cifar_resnet_20_8", "cifar_resnet_8_8")},
     "config.transfer.strategy: 'append' cannot move cifar_resnet_14_8 to cifar_resnet_8_8: Strategy 'append' "
     "cannot squeeze stage 1 from 2 to 1 blocks; valid squeeze strategies: 'drop_last', 'interleave' (or an "
     "official mapping string). One experiment stretches or squeezes: run the deeper and the shallower targets "
     "as two experiments with the same workdir (the second reuses the source's finished IMP runs)."),
    ({"mode": "experiment", "experiment.target_models": ("cifar_vgg_11_8",)},
     "config.experiment.target_models: cifar_vgg_11_8 cannot take tickets of cifar_resnet_14_8: Cannot transfer "
     "between model families (cifar_resnet_14_8 -> cifar_vgg_11_8: 'cifar_resnet' vs 'cifar_vgg')"),
    ({"mode": "experiment", "experiment.seeds": (0, 1), "seed": 7},
     "config.seed: 7 is not used: experiment.seeds=(0, 1) picks the seeds. Add it there "
     "(--config.experiment.seeds='(0,1,7)'), or drop experiment.seeds."),
    ({"mode": "experiment", "experiment.baselines": ("random", "random")},
     "config.experiment.baselines: names a baseline twice: ('random', 'random')"),
]


@pytest.mark.parametrize("overrides, message", CONFIG_PROBES)
def test_bad_config_is_one_line_and_leaves_no_workdir(capsys, tmp_path, overrides, message):
    code, _, err = run_cli(capsys, tiny_config(**overrides), tmp_path / "run")
    assert code == 2
    assert message in one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_brackets_in_the_workdir_are_refused_before_it_is_made(capsys, tmp_path):
    workdir = tmp_path / "run[1]"
    code, _, err = run_cli(capsys, tiny_config(), workdir)
    assert code == 2 and one_line_error(err) == (
        f"elax: error: --workdir {str(workdir)!r}: brackets in the path break checkpoint restores (Orbax takes them "
        "for a pattern). Use a path without [ and ].")
    assert not workdir.exists()


def test_a_workdir_inside_a_run_or_an_experiment_is_refused(capsys, tmp_path, imp_run):
    source = imp_run[0]
    experiment = tmp_path / "exp"
    (experiment / "seed_0" / "imp_a").mkdir(parents=True)
    (experiment / "seed_0" / "imp_a" / "config.json").write_text("{}")
    for config, workdir, message in [
        (tiny_config(), os.path.join(source, "sub"), f"--workdir {source}/sub is inside the run {source}. Pass a "
                                                      "folder outside it."),
        (tiny_config(mode="experiment"), source, f"--workdir {source} holds a run (mode imp), not an experiment. "
                                                 "Pass a new folder (an experiment reuses finished runs only in its "
                                                 "own folder)."),
        (tiny_config(), str(experiment), f"--workdir {experiment} holds an experiment's runs (seed_0/imp_a, ...); a "
                                         "run of mode imp needs a folder of its own. Pass one of those runs or a "
                                         "new folder.")]:
        code, _, err = run_cli(capsys, config, workdir)
        assert code == 2 and one_line_error(err) == f"elax: error: {message}"
    assert not os.path.exists(os.path.join(source, "sub"))


@pytest.mark.parametrize("overrides, message", [
    ({"transfer.strategy": "nonsense"}, "config.transfer.strategy: 'nonsense' cannot move cifar_resnet_14_4 to "
                                        "cifar_resnet_20_4: Unknown strategy 'nonsense'"),
    ({"transfer.strategy": "0:0;1:1,9"}, "target block 9 does not exist"),
    ({"model.name": "cifar_resnet_20_8"}, "config.model.name: cifar_resnet_20_8 cannot take tickets of "
                                          "cifar_resnet_14_4: Cannot transfer between different widths"),
    ({"transfer.replica_masks": "shuffle"}, "config.transfer.replica_masks: unknown option 'shuffle'"),
    ({"transfer.weights": "random"}, "config.transfer.weights: unknown option 'random'"),
    ({"model.name": "cifar_resnet_14_4"}, "config.model.name: is the source run's model (cifar_resnet_14_4): a "
                                          "transfer moves its tickets to another depth. Pick a deeper or shallower "
                                          "model of its family."),
    ({"model.name": "cifar_resnet_8_4", "transfer.strategy": "drop_last", "transfer.replica_masks": "permute"},
     "config.transfer.replica_masks: 'permute' shuffles the masks of replicated blocks, and 'drop_last' from "
     "cifar_resnet_14_4 to cifar_resnet_8_4 replicates none. Use 'copy' (the default)."),
    ({"transfer.levels": (-1,)}, "transfer.levels: level -1 does not exist; levels start at 0 (finished: "
                                 "[0, 1, 2, 3])."),
])
def test_bad_transfer_options_are_refused_before_the_workdir(capsys, monkeypatch, tmp_path, imp_run, overrides,
                                                             message):
    home = tmp_path / "home"
    shutil.copytree(imp_run[0], home / "source")
    monkeypatch.setenv("HOME", str(home))   # `~` in transfer.source is the home directory
    config = tiny_config(**{"mode": "transfer", "model.name": "cifar_resnet_20_4", "transfer.source": "~/source",
                            **overrides})
    code, _, err = run_cli(capsys, config, tmp_path / "run")
    assert code == 2 and message in one_line_error(err)
    assert not (tmp_path / "run").exists()


def test_an_experiment_that_fails_before_training_leaves_no_workdir(capsys, tmp_path):
    (tmp_path / "data").mkdir()   # exists, holds no CIFAR-10: every run fails when it opens the data
    config = tiny_config(**{"mode": "experiment", "data.name": "cifar10", "data.dir": str(tmp_path / "data")})
    code, _, err = run_cli(capsys, config, tmp_path / "run")
    assert code == 2 and "dataset 'cifar10' not found" in err
    assert not (tmp_path / "run").exists()


def test_workdir_that_is_a_file(capsys, tmp_path):
    (tmp_path / "run").write_text("not a folder")
    code, _, err = run_cli(capsys, tiny_config(), tmp_path / "run")
    assert code == 2 and "is a file, not a directory" in one_line_error(err)
    assert (tmp_path / "run").read_text() == "not a folder"


# -- runs in progress -----------------------------------------------------------------------------------------------

def test_divergence_stops_the_level_keeps_its_checkpoint_and_records_nothing(capsys, tmp_path):
    import plain_family  # noqa: F401  (an MLP: a learning rate of its own is a train step of its own to compile)
    config = tiny_config(**{"model.name": "plain_1-1_w32-32", "train.lr": 1e4, "lottery.levels": 1})
    code, _, err = run_cli(capsys, config, tmp_path / "run")
    assert code == 3
    line = one_line_error(err)
    assert "imp plain_1-1_w32-32 level 0 (dense) diverged by step " in line
    assert "Lower --config.train.lr (now 10000.0)" in line
    assert wd.load_results(str(tmp_path / "run")) == []
    assert checkpoint.latest_step(wd.checkpoints_dir(str(tmp_path / "run"), 0)) is None   # no NaN state saved
    assert os.path.isdir(wd.ticket_dir(str(tmp_path / "run"), 0))    # the start, from which a resume begins


def _metrics(workdir) -> list[dict]:
    with open(wd.metrics_path(str(workdir), 0)) as f:
        return [json.loads(line) for line in f]


def test_a_failing_evaluation_keeps_the_epoch_it_followed(capsys, tmp_path, monkeypatch, imp_run):
    """A damaged test image is met only when the first epoch is evaluated: the epoch's training is kept (with no
    save due, the checkpoint comes from the failure), and the resumed run ends as an uninterrupted one (the shared
    run's level 0)."""
    from elax import train
    config = tiny_config(**{"lottery.levels": 0, "train.checkpoint_every_secs": 1e9})
    evaluate = train.Trainer.evaluate

    def damaged_image(*args, **kwargs):
        raise ValueError("cannot decode val/ant/0.jpg: damaged. Replace or delete it")
    monkeypatch.setattr(train.Trainer, "evaluate", damaged_image)
    code, _, err = run_cli(capsys, config, tmp_path / "run")
    assert code == 2
    assert one_line_error(err) == "elax: error: cannot decode val/ant/0.jpg: damaged. Replace or delete it"
    epoch = _metrics(tmp_path / "run")
    assert [line["step"] for line in epoch] == [12] and "test_accuracy" not in epoch[0]
    assert checkpoint.latest_step(wd.checkpoints_dir(str(tmp_path / "run"), 0)) == 12
    monkeypatch.setattr(train.Trainer, "evaluate", evaluate)
    assert run_cli(capsys, config, tmp_path / "run")[0] == 0
    assert wd.load_results(str(tmp_path / "run")) == imp_run[1][:1]
    resumed, whole = (_metrics(workdir) for workdir in (tmp_path / "run", imp_run[0]))
    assert [line["step"] for line in resumed] == [12, 24] and resumed[1]["train_loss"] == whole[1]["train_loss"]


def test_a_second_process_on_the_workdir_is_refused_with_the_holders_pid(capsys, tmp_path):
    workdir = tmp_path / "run"
    with wd.lock(str(workdir)):
        code, _, err = run_cli(capsys, tiny_config(), workdir)
    assert code == 4 and f"is in use by another elax process (PID {os.getpid()})" in one_line_error(err)
    with wd.lock(str(workdir)):  # released when its holder is done (or dies)
        pass


# -- damaged files: named in one line, rebuilt where possible, no finished level lost ---------------------------------

@pytest.fixture
def imp_copy(imp_run, tmp_path):
    workdir = tmp_path / "imp"
    shutil.copytree(imp_run[0], workdir)
    return str(workdir), imp_run[1]


def test_a_run_resumed_on_changed_data_is_refused(capsys, imp_copy):
    """A folder's content can change under an unchanged config (a class folder removed): the workdir records
    what its data held, and checkpoints never meet data they were not trained on."""
    workdir, records = imp_copy
    path = os.path.join(workdir, wd.CONFIG_FILE)
    config = wd.read_json(path)
    assert config["dataset"] == {"classes": 10, "train_images": 1437, "test_images": 360}
    wd.write_json(path, {**config, "dataset": {**config["dataset"], "classes": 3, "train_images": 60}})
    code, _, err = run_cli(capsys, tiny_config(), workdir)
    assert code == 2
    assert one_line_error(err) == (f"elax: error: {workdir} was trained on other data than the data it reads now "
                                   "(classes: 3 -> 10; train_images: 60 -> 1437). Finished work there is kept: "
                                   "restore the data it was trained on, or pass a new --workdir for this data.")
    del config["dataset"]   # a run from before elax recorded its data: resumed, and recorded now
    wd.write_json(path, config)
    assert run_cli(capsys, tiny_config(), workdir)[0] == 0 and wd.load_results(workdir) == records
    assert wd.read_json(path)["dataset"]["classes"] == 10


@pytest.mark.parametrize("name", ["results.json", "config.json"])
def test_damaged_json_is_named(capsys, imp_copy, name):
    workdir, records = imp_copy
    path = os.path.join(workdir, name)
    with open(path, "r+") as f:
        f.truncate(23)
    code, _, err = run_cli(capsys, tiny_config(), workdir)
    rebuilt = {"results.json": "each finished level's record is taken again from its last checkpoint",
               "config.json": "it is written again from that command's config"}[name]
    assert code == 2 and one_line_error(err).startswith(f"elax: error: {path} is damaged (")
    assert one_line_error(err).endswith(f"). Restore it from a copy, or delete it and run the run's command again: "
                                        f"{rebuilt}.")
    assert len(os.listdir(workdir)) == 3 + 4 + 1    # config, results, rewind, 4 levels, lock: nothing deleted
    os.remove(path)   # as the message says
    assert run_cli(capsys, tiny_config(), workdir)[0] == 0 and wd.load_results(workdir) == records


def test_resume_drops_a_damaged_metrics_line_and_a_record_deleted_by_hand_is_rebuilt(capsys, imp_copy):
    workdir, records = imp_copy
    with open(wd.metrics_path(workdir, 3), "a") as f:
        f.write('{"epoch": 3, "st')                       # a write cut by a kill
    wd.write_json(os.path.join(workdir, "results.json"), records[:3])
    code, _, err = run_cli(capsys, tiny_config(), workdir)
    assert code == 0, err
    assert wd.load_results(workdir) == records
    with open(wd.metrics_path(workdir, 3)) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]


def test_damaged_newest_checkpoint_falls_back_to_the_older_one(capsys, imp_copy):
    workdir, records = imp_copy
    ckpt_dir = wd.checkpoints_dir(workdir, 3)
    assert sorted(int(s) for s in os.listdir(ckpt_dir) if s.isdigit()) == [12, 24]   # two are kept
    for root, _, files in os.walk(os.path.join(ckpt_dir, "24", "default")):
        for name in files:
            if name not in ("commit_success.txt",):
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(5)
    wd.write_json(os.path.join(workdir, "results.json"), records[:3])
    code, out, err = run_cli(capsys, tiny_config(), workdir)
    assert code == 0, err
    assert "step 24" in out and "is damaged (removed); resuming from step 12" in out
    assert wd.load_results(workdir) == records                   # retrained from step 12 to the same result


def test_deleting_a_level_retrains_it_without_duplicate_metrics(capsys, imp_copy):
    workdir, records = imp_copy
    shutil.rmtree(wd.checkpoints_dir(workdir, 3))
    code, _, err = run_cli(capsys, tiny_config(), workdir)
    assert code == 0, err
    assert wd.load_results(workdir) == records
    with open(wd.metrics_path(workdir, 3)) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]


def _damage(directory):
    for root, _, files in os.walk(directory):
        for name in files:
            with open(os.path.join(root, name), "wb") as f:
                f.write(b"garbage")


@pytest.mark.parametrize("harm", ["damaged", "deleted"])
def test_damaged_or_deleted_imp_ticket_is_rebuilt_from_checkpoint_and_rewind(capsys, imp_copy, harm):
    workdir, _ = imp_copy
    original = runs.load_ticket(workdir, 2)
    _damage(wd.ticket_dir(workdir, 2)) if harm == "damaged" else shutil.rmtree(wd.ticket_dir(workdir, 2))
    capsys.readouterr()
    rebuilt = runs.load_ticket(workdir, 2)
    assert capsys.readouterr().out == (f"note: {wd.ticket_dir(workdir, 2)} was missing or damaged: rebuilt from "
                                       "level 2's checkpoint and the rewind state, and saved again.\n")
    for a, b in ((original.params, rebuilt.params), (original.mask, rebuilt.mask),
                 (original.batch_stats, rebuilt.batch_stats)):
        jax.tree.map(np.testing.assert_array_equal, a, b)
    assert rebuilt.rewind_step == original.rewind_step == 5
    runs.load_ticket(workdir, 2)                                   # and saved again: readable as it is
    assert capsys.readouterr().out == ""
    with pytest.raises(FileNotFoundError) as info:
        runs.load_ticket(workdir, 7)
    assert str(info.value) == f"{workdir} has no level 7; levels present: [0, 1, 2, 3]."


def test_damaged_rewind_state_is_replayed_by_the_imp_run(imp_copy):
    workdir, records = imp_copy
    original = checkpoint.load_tree(wd.rewind_dir(workdir))
    _damage(wd.rewind_dir(workdir))
    with pytest.raises(checkpoint.DamagedCheckpoint) as info:   # a run built on it is told what to do
        runs.load_ticket(workdir, 0)
    message = str(info.value)
    assert "\n" not in message and f"{wd.rewind_dir(workdir)} is damaged and cannot be restored" in message
    assert "Run that IMP run's command again: it rebuilds the rewind state" in message
    shutil.rmtree(wd.level_dir(workdir, 3))      # level 3 must be made again, from the rewind state
    lines = []
    assert runs.run_imp(tiny_config(), workdir, log=lines.append) == records
    assert any("Rebuilding it: replaying level 0 to step 5." in line for line in lines)
    jax.tree.map(np.testing.assert_array_equal, checkpoint.load_tree(wd.rewind_dir(workdir)), original)


def test_damaged_gzip_idx_is_named(tmp_path):
    from elax import data
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (tmp_path / f"{name}.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: damaged gzip file"):
        data.load("mnist", str(tmp_path))


def test_a_full_disk_is_one_line_and_keeps_finished_levels(capsys, imp_copy, monkeypatch):
    workdir, records = imp_copy
    shutil.rmtree(wd.level_dir(workdir, 3))
    usage = shutil.disk_usage(workdir)
    monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda path: usage._replace(free=100_000))
    code, _, err = run_cli(capsys, tiny_config(), workdir)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"elax: error: No space left on the disk of {wd.ticket_dir(workdir, 3)} (0.1 MiB free")
    assert err.rstrip().endswith("Free space and run the same command; finished levels are kept.")
    assert wd.load_results(workdir) == records        # level 3's record stays until the level is trained again
    monkeypatch.undo()
    code, _, err = run_cli(capsys, tiny_config(), workdir)
    assert code == 0, err
    assert wd.load_results(workdir) == records


def test_ctrl_c_is_one_line_and_keeps_finished_levels(capsys, imp_copy, monkeypatch):
    workdir, records = imp_copy
    shutil.rmtree(wd.level_dir(workdir, 3))

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_tree", interrupted)   # as level 3 starts: saving its ticket
    code, _, err = run_cli(capsys, tiny_config(), workdir)
    assert code == 130
    assert one_line_error(err) == ("elax: error: interrupted. The same command resumes the run from its last "
                                   "checkpoint; finished levels are kept.")
    assert wd.load_results(workdir) == records   # level 3's record stays until the level is trained again


# -- streamed data: worker counts, damaged images --------------------------------------------------------------------

GIB = 2**30


@pytest.mark.parametrize("requested, images, cores, memory, workers, note", [
    (1000, 24, 2, 23 * GIB, 3, "config.data.workers=1000 lowered to 3: an epoch has 3 batches, and a worker makes "
                               "whole batches."),
    (1000, 800, 2, 23 * GIB, 4, "config.data.workers=1000 lowered to 4: at most 2 per CPU core (2 cores)."),
    (64, 10**6, 64, 2 * GIB, 5, "config.data.workers=64 lowered to 5: the available memory (2.0 GiB) holds about 5 "
                                "for the training and the test pipelines at ~200 MB a worker."),
    (-1, 10**6, 32, 23 * GIB, 16, ""),       # the default: one per core, at most 16
    (-1, 10**6, 32, 1 * GIB, 2, "config.data.workers=-1 lowered to 2: the available memory (1.0 GiB) holds about "
                                "2 for the training and the test pipelines at ~200 MB a worker."),
    (3, 800, 2, None, 3, ""),                # memory unknown: not a limit
    (0, 24, 2, 23 * GIB, 0, ""),             # threads
])
def test_a_worker_count_the_machine_cannot_use_is_lowered_with_the_reason(monkeypatch, requested, images, cores,
                                                                         memory, workers, note):
    from elax.runs import context
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(context, "available_memory", lambda: memory)
    assert context.stream_workers(requested, images, batch_size=8) == (workers, note)


def test_a_streamed_run_says_why_it_has_fewer_workers(monkeypatch, tmp_path):
    from elax.runs import context
    for name in ("cat", "dog", "eel"):
        for split, count in (("train", 8), ("val", 1)):
            (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (tmp_path / split / name / f"{i}.jpg").write_bytes(b"\xff\xd8 a scan reads names only")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(context, "available_memory", lambda: 23 * GIB)
    config = tiny_config(**{"model.name": "imagenet_resnet_18_4", "data.name": "imagefolder",
                            "data.dir": str(tmp_path), "data.workers": 1000, "data.image_size": 32,
                            "data.resize_size": 36, "train.batch_size": 8, "lottery.rewind_steps": 1})
    lines = []
    ctx = context.open_run(config, lines.append)
    assert ctx.data.workers == 3
    assert lines == ["note: config.data.workers=1000 lowered to 3: an epoch has 3 batches, and a worker makes whole "
                     "batches.",
                     f"data: imagefolder, 24 training images, streamed from ImageFolder {tmp_path} by 3 Grain worker "
                     "processes (data.source=stream)"]


# Reads the first batch of an ImageFolder (argv[1]) whose every batch holds a damaged image, through 2 workers.
FIRST_BATCH_DAMAGED = """if True:
    import multiprocessing, sys
    from elax import data, train
    from elax.data import records
    splits = records.open_splits("imagefolder", sys.argv[1])
    source = data.StreamSource(splits.train, splits.test, splits.num_classes, splits.mean, splits.std,
                               data.ImageOptions(16, 16), workers=2)
    try:
        next(source.train_batches(data.BatchSpec(seed=0, batch_size=4, steps_per_epoch=1, augment=False), 0, 1,
                                  train.make_mesh()))
    except ValueError as error:
        print(error)
    print(len(multiprocessing.active_children()), "workers left")
"""


def test_a_damaged_image_met_by_grain_workers_is_one_line_and_leaves_no_worker(tmp_path):
    """Its pipeline used to stay open when the first batch failed: its workers lived on, and Grain's finalizers
    closed them at exit while Grain's threads still used them (a traceback after the error, in 3 of 8 runs)."""
    import simplejpeg
    image = simplejpeg.encode_jpeg(np.zeros((20, 24, 3), np.uint8))
    for split in ("train", "val"):
        for name in ("ant", "bee"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                (tmp_path / split / name / f"{i}.jpg").write_bytes(image)
    (tmp_path / "train" / "bee" / "1.jpg").write_bytes(b"hello\n")
    done = subprocess.run([sys.executable, "-c", FIRST_BATCH_DAMAGED, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (f"cannot decode {tmp_path / 'train' / 'bee' / '1.jpg'}: not a JPEG, PNG or BMP image, or "
                           "damaged. Replace or delete it and run the same command; finished levels are kept.\n"
                           "0 workers left\n")
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


# -- signals, damaged results, config files, reports, transfers ----------------------------------------------------

# main.py's signal handling, with the main thread held inside a C call for good, as inside XLA: a mutex locked
# twice (signals interrupt its wait, which then resumes; Python's handlers never run). "waiting" is printed once
# the main thread is in there: glibc marks the mutex 2 when a thread waits for it.
HELD_IN_C = """if True:
    import ctypes, sys, threading, time
    sys.path.insert(0, %r)
    import main
    from elax import stopping
    main.handle_stop_signals()
    stopping.STARTED.set()
    libc = ctypes.CDLL(None)
    mutex = ctypes.create_string_buffer(64)
    libc.pthread_mutex_init(mutex, None)
    libc.pthread_mutex_lock(mutex)

    def announce():
        while ctypes.c_int.from_buffer(mutex).value != 2:
            time.sleep(0.01)
        print("waiting", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    libc.pthread_mutex_lock(mutex)
""" % ROOT


def test_a_second_signal_ends_a_process_waiting_inside_a_c_call(tmp_path):
    held = subprocess.Popen([sys.executable, "-c", HELD_IN_C], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert held.stdout.readline() == "waiting\n"
        held.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert held.poll() is None          # the first cannot take effect there
        held.send_signal(signal.SIGINT)
        _, err = held.communicate(timeout=10)
    finally:
        held.kill()
    assert (held.returncode, err) == (130, "elax: error: interrupted twice: stopped at once. The same command "
                                           "resumes the run from its last checkpoint; finished levels are kept.\n")


def test_nan_in_results_json_is_named_before_anything_trains(capsys, imp_copy):
    """Python's json reads NaN, which the strict JSON of results files cannot hold: a run that read it trained a
    level and then failed to write its record, naming neither the file nor the record."""
    workdir, _ = imp_copy
    path = os.path.join(workdir, "results.json")
    records = wd.read_json(path)
    records[1]["test_loss"] = float("nan")
    with open(path, "w") as f:
        json.dump(records, f)
    code, _, err = run_cli(capsys, tiny_config(**{"lottery.levels": 4}), workdir)
    assert code == 2 and one_line_error(err) == (
        f"elax: error: {path} is damaged (NaN is not a JSON number). Restore it from a copy, or delete it and run "
        "the run's command again: each finished level's record is taken again from its last checkpoint.")
    assert not os.path.exists(wd.level_dir(workdir, 4))


@pytest.mark.parametrize("source, message", [
    ("def get_config(:\n    pass\n", "line 1, column 16: SyntaxError: invalid syntax."),
    ("def get_config():\nreturn 1\n", "line 2, column 1: IndentationError: expected an indented block after "
                                      "function definition on line 1."),
])
def test_a_config_file_with_a_syntax_error_is_one_line(tmp_path, source, message):
    (tmp_path / "broken.py").write_text(source)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "main.py"), "--config", str(tmp_path / "broken.py")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (
        2, "", f"elax: error: --config: {tmp_path / 'broken.py'}, {message} Fix the file and run the same "
               "command.\n")


def test_runs_of_one_seed_and_two_recipes_are_named_as_such(tmp_path):
    from elax import config as config_lib, report
    configs = [config_lib.default_config().to_dict(), config_lib.default_config().to_dict()]
    configs[1]["train"]["lr"] = 0.05
    for i, config in enumerate(configs):
        record = {"level": 0, "sparsity": 0.0, "test_accuracy": 0.9, "model": "cifar_resnet_20", "method": "imp",
                  "seed": 0, "recipe_id": wd.recipe_id(config)}
        wd.write_json(str(tmp_path / f"run{i}" / "results.json"), [record])
        wd.write_json(str(tmp_path / f"run{i}" / "config.json"), config)
    with pytest.raises(ValueError) as info:
        report.load_records([tmp_path / "run0", tmp_path / "run1"])
    assert str(info.value) == (
        f"the runs have 2 different recipes, which are never averaged together: {tmp_path / 'run0' / 'results.json'} "
        f"has recipe {wd.recipe_id(configs[0])}, {tmp_path / 'run1' / 'results.json'} has "
        f"{wd.recipe_id(configs[1])} (they differ in train.lr: 0.1 vs 0.05). Report runs of one recipe, or pass "
        "--mix-recipes to show each recipe as series of its own.")


def test_the_transfer_plan_suggests_a_config_of_any_family(capsys):
    from elax.transfer import cli as transfer_cli
    assert transfer_cli.main(["imagenet_resnet_26", "imagenet_resnet_18", "--strategy", "drop_last"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "  python main.py --config configs/transfer.py --config.transfer.source=RUN_DIR "
        "--config.model.name=imagenet_resnet_18 --config.transfer.strategy='drop_last' --workdir WORKDIR")

