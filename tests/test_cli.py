"""The command line as a user runs it: a real `python main.py` IMP run, killed with SIGKILL and resumed, and
the errors a user sees for bad configs and missing data."""

import glob
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, tiny_cli_args, tiny_config
from elax import cli

# The in-process IMP fixture's recipe with 1 pruned level: levels do not change any compiled program.
TINY = tiny_cli_args(**{"lottery.levels": 1})


def main_py(args, prefix=(), **kwargs):
    return subprocess.Popen([*prefix, sys.executable, os.path.join(ROOT, "main.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def finish(process, timeout=300):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(workdir, stdout, stderr) of a tiny 2-level IMP run, progress and TensorBoard on, its output in pipes."""
    workdir = str(tmp_path_factory.mktemp("cli") / "run")
    code, out, err = finish(main_py([*TINY, "--config.progress=true", "--config.tensorboard=true",
                                     f"--workdir={workdir}"]))
    assert code == 0, err
    return workdir, out, err


def test_cli_run_prints_levels_and_table(uninterrupted):
    workdir, out, _ = uninterrupted
    records = results(workdir)
    assert [r["level"] for r in records] == [0, 1]
    assert f"level  1 | imp       | cifar_resnet_14_4 | sparsity {records[1]['sparsity']:7.2%}" in out
    assert "| sparsity % | remaining % | IMP ResNet-14 (w4) |" in out
    for level in range(2):
        assert os.path.isdir(os.path.join(workdir, f"level_{level:02d}", "checkpoints"))
        with open(os.path.join(workdir, f"level_{level:02d}", "metrics.jsonl")) as f:
            assert [json.loads(line)["epoch"] for line in f] == [1, 2]


def test_sigkill_and_restart_gives_identical_results(uninterrupted, tmp_path):
    reference_dir, _, _ = uninterrupted
    workdir = str(tmp_path / "run")
    process = main_py([*TINY, f"--workdir={workdir}"], start_new_session=True)
    metrics = os.path.join(workdir, "level_01", "metrics.jsonl")
    deadline = time.time() + 240
    while not (os.path.exists(metrics) and os.path.getsize(metrics) > 0):
        assert process.poll() is None, "run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # mid level 1: after its first epoch, before its last
    process.communicate()
    assert [r["level"] for r in results(workdir)] == [0]
    code, out, err = finish(main_py([*TINY, f"--workdir={workdir}"]))
    assert code == 0, err
    assert results(workdir) == results(reference_dir)
    with open(metrics) as f:
        assert [json.loads(line)["epoch"] for line in f] == [1, 2]


def test_bad_config_is_a_one_line_error(tmp_path):
    # One case through main.py (flags, exit code); tests/test_probes.py checks the others in-process.
    code, out, err = finish(main_py([*TINY, "--config.model.name=cifar_resnet_21", f"--workdir={tmp_path / 'run'}"]))
    assert code == 2
    assert "elax: error: --config.model.name: CIFAR ResNet depth must be 6n+2" in err   # the CLI spells keys as flags
    assert "Traceback" not in err and not os.path.exists(tmp_path / "run")


def test_incomplete_multi_process_flags_are_one_line(tmp_path):
    code, _, err = finish(main_py([*TINY, "--num_processes=2", f"--workdir={tmp_path / 'run'}"]), timeout=60)
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
    assert err.startswith("elax: error: cannot start a multi-process run: ")
    assert err.endswith("Pass --coordinator=HOST:PORT --num_processes=N --process_id=I (0 <= I < N) on every host, "
                        "or start under SLURM (docs/scaling.md, 'Multi-host runs').\n")
    assert not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("override, message", [
    ("--config.train.epoch=3", '--config.train.epoch: the config has no key \'epoch\'. Did you mean "epochs"'),
    ("--config.workdir=x", "--config.workdir: the config has no key 'workdir'. --workdir is a flag of its own"),
    ("--config.nope.x=1", "--config.nope.x: the config has no key 'nope'. Overrides can only set keys"),
])
def test_unknown_config_key_is_a_one_line_error(tmp_path, override, message):
    code, out, err = finish(main_py([*TINY, override, f"--workdir={tmp_path / 'run'}"]), timeout=60)
    assert code == 2
    assert err.startswith(f"elax: error: {message}")
    assert "Traceback" not in err and not os.path.exists(tmp_path / "run")


@pytest.mark.parametrize("args, message", [
    (["--config.train.lr=abc"], "flag --config.train.lr=abc: could not convert string to float: 'abc'"),
    (["--config.lottery.levels=1.5"], "flag --config.lottery.levels=1.5: invalid literal for int() with base 10: "
                                      "'1.5'"),
    (["extra"], "unexpected arguments ['extra']. Options are --config FILE, --workdir DIR and --config.KEY=VALUE "
                "overrides, each as one argument (python main.py --help)."),
    (["--config", os.path.join(ROOT, "configs", "quickstart.py:5")],
     f"flag --config={ROOT}/configs/quickstart.py:5: Error whilst parsing config file: TypeError: get_config() "
     "takes 0 positional arguments but 1 was given (`--config FILE:ARG` calls the file's get_config(ARG); see the "
     "file for the arguments it takes)"),
])
def test_a_bad_command_line_is_one_line(tmp_path, args, message):
    code, out, err = finish(main_py([*TINY, *args, f"--workdir={tmp_path / 'run'}"]), timeout=60)
    assert (code, out, err) == (2, "", f"elax: error: {message}\n")
    assert not os.path.exists(tmp_path / "run")


def test_list_names_what_elax_knows_and_a_missing_config_is_one_line(tmp_path):
    from elax import cli
    lines = cli.listing().splitlines()
    assert lines[0] == "modes (config.mode): imp, transfer, baseline, experiment, report"
    assert ("baselines (config.baseline.method): reinit, random, magnitude, snip, grasp, synflow, set, rigl"
            in lines)
    assert "  vit: vit_{depth}_{dim}_p{patch}[_h{heads}][_gap] (e.g. vit_6_64_p4, vit_4_64_p4_gap)" in lines
    assert any(line.startswith("datasets (config.data.name): cifar10, cifar100,") for line in lines)
    code, out, err = finish(main_py([f"--workdir={tmp_path / 'run'}"]), timeout=60)
    assert (code, out) == (2, "") and err == ("elax: error: --config FILE is required (e.g. --config "
                                              "configs/quickstart.py; python main.py --list names what elax knows, "
                                              "--help the flags).\n")


def test_sigterm_stops_a_run_as_ctrl_c_does(tmp_path):
    run = main_py([*TINY, f"--workdir={tmp_path / 'run'}"])
    while "data:" not in run.stdout.readline():   # training is about to start
        pass
    run.send_signal(signal.SIGTERM)
    code, _, err = finish(run, timeout=120)
    assert (code, err) == (130, "elax: error: interrupted. The same command resumes the run from its last "
                                "checkpoint; finished levels are kept.\n")


def test_ctrl_c_while_starting_is_one_line_and_writes_nothing(tmp_path):
    # Before: an import traceback, or (landing in a garbage-collection callback) nothing, and the run went on.
    run = main_py([*TINY, f"--workdir={tmp_path / 'run'}"])
    time.sleep(0.5)   # importing JAX
    run.send_signal(signal.SIGINT)
    code, out, err = finish(run, timeout=60)
    assert (code, out, err) == (130, "", "elax: error: interrupted before the run started; nothing was written.\n")
    assert not (tmp_path / "run").exists()


def test_missing_config_file_is_one_line_listing_the_configs_beside_it(tmp_path):
    missing = os.path.join(ROOT, "configs", "cifar_resnt.py")
    code, out, err = finish(main_py(["--config", f"{missing}:3", f"--workdir={tmp_path / 'run'}"]), timeout=60)
    assert code == 2 and out == ""
    assert err.startswith(f"elax: error: --config: no such file {missing!r}. Config files in {ROOT}/configs: "
                          "cifar_baseline.py, cifar_resnet.py, ")
    assert err.count("\n") == 1 and not os.path.exists(tmp_path / "run")


def test_missing_cifar_data_fails_fast_with_advice(tmp_path):
    start = time.monotonic()
    code, out, err = finish(main_py([
        "--config", os.path.join(ROOT, "configs", "cifar_resnet.py"), f"--config.data.dir={tmp_path}",
        f"--workdir={tmp_path / 'run'}"]), timeout=60)
    assert code == 2
    assert "elax: error: dataset 'cifar10' not found" in err and "cifar-10-binary.tar.gz" in err
    assert time.monotonic() - start < 30  # includes starting Python and importing JAX


def test_missing_data_dir_is_named(tmp_path):
    missing = tmp_path / "nowhere"
    code, _, err = finish(main_py([*TINY, "--config.data.name=cifar10", f"--config.data.dir={missing}",
                                   f"--workdir={tmp_path / 'run'}"]), timeout=60)
    assert code == 2 and str(missing) in err and "does not exist" in err


def test_report_mode_reads_runs_and_writes_the_report(uninterrupted, tmp_path):
    run_dir, _, _ = uninterrupted
    out = tmp_path / "report"
    code, stdout, err = finish(main_py(["--config", os.path.join(ROOT, "configs", "quickstart.py"),
                                        "--config.mode=report", f"--config.report.runs=('{run_dir}',)",
                                        f"--config.report.out={out}", f"--workdir={tmp_path}"]), timeout=120)
    assert code == 0, err
    assert stdout.startswith(f"elax report of {run_dir} into {out}\n")
    assert "| sparsity % | remaining % | IMP ResNet-14 (w4) |" in stdout
    assert sorted(os.listdir(out)) == ["accuracy_vs_sparsity.pdf", "accuracy_vs_sparsity.png",
                                       "accuracy_vs_sparsity.svg", "report.md", "results.csv", "results_per_seed.csv"]


def as_an_ordinary_user():
    """A command prefix under which file permissions hold. Root (as in this project's CI) writes into read-only
    folders; inside a user namespace of its own (`unshare`) it is an ordinary owner of its files."""
    if os.geteuid() != 0:
        return []
    prefix = ["unshare", "--user", "--map-user=1000", "--map-group=1000"]
    if shutil.which("unshare") is None or subprocess.run([*prefix, "true"]).returncode != 0:
        pytest.skip("root without user namespaces: no folder is read-only to this process")
    return prefix


def files_with_sizes_and_times(folder):
    paths = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    stats = {os.path.relpath(path, folder): os.stat(path) for path in paths}
    return {name: (st.st_size, st.st_mtime) for name, st in stats.items()}


def set_writable(folder, writable: bool):
    for root, dirs, names in os.walk(folder):
        for path in [root] + [os.path.join(root, name) for name in names]:
            mode = os.stat(path).st_mode
            os.chmod(path, mode | 0o200 if writable else mode & ~0o222)


@pytest.mark.parametrize("finished", [True, False], ids=["finished-run", "new-run"])
def test_read_only_workdir_is_one_line_and_loses_nothing(uninterrupted, tmp_path, finished):
    prefix = as_an_ordinary_user()
    if finished:   # resumed with one more level: the workdir holds 2 finished levels
        workdir, locked = tmp_path / "run", tmp_path / "run"
        shutil.copytree(uninterrupted[0], workdir)
    else:          # a new run in a read-only folder
        locked = tmp_path / "read_only"
        workdir = locked / "run"
        locked.mkdir()
    before = files_with_sizes_and_times(locked)
    set_writable(locked, False)
    try:
        code, _, err = finish(main_py([*TINY, "--config.lottery.levels=2", f"--workdir={workdir}"], prefix),
                              timeout=60)
    finally:
        set_writable(locked, True)
    named = workdir / ".lock" if finished else workdir
    assert code == 2
    assert err.endswith(f"elax: error: Permission denied ({named}). Check the path, its permissions and free space; "
                        "finished levels are kept.\n"), err
    assert "Traceback" not in err
    assert files_with_sizes_and_times(locked) == before


@pytest.mark.parametrize("given, names", [
    (("cifar_resnet_32",), ("cifar_resnet_32",)),
    (("cifar_resnet_32,cifar_resnet_56",), ("cifar_resnet_32", "cifar_resnet_56")),     # a,b
    (("(cifar_resnet_32, cifar_resnet_56)",), ("cifar_resnet_32", "cifar_resnet_56")),  # (a, b) unquoted
    (("(cifar_resnet_32,)",), ("cifar_resnet_32",)),
    (("cifar_resnet_32", "cifar_resnet_56"), ("cifar_resnet_32", "cifar_resnet_56")),   # ('a','b'): parsed
    ((), ()),
    ((32,), (32,)),   # not a name: left for validation to refuse
])
def test_lists_of_names_from_the_shell_are_split(given, names):
    # What ml_collections makes of --config.experiment.target_models=<text> (checked on its flag parsing).
    config = tiny_config(**{"experiment.target_models": given, "experiment.baselines": given})
    cli.split_name_lists(config)
    assert config.experiment.target_models == names and config.experiment.baselines == names


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")   # ml_collections' loader of --config
def test_a_repeated_override_takes_its_last_value(monkeypatch):
    import main   # ml_collections joined repeated tuples: seeds (0, 1) then (2,) were (0, 1, 2)
    argv = ["main.py", "--config", os.path.join(ROOT, "configs", "quickstart.py"), "--config.experiment.seeds=(0,1)",
            "--config.train.lr=0.1", "--config.experiment.seeds=(2,)", "--config.train.lr=0.2", "--workdir=w"]
    assert main.last_overrides_win(argv) == [*argv[:3], "--config.experiment.seeds=(2,)", "--config.train.lr=0.2",
                                             "--workdir=w"]
    monkeypatch.setattr(sys, "argv", argv)    # where ml_collections finds the overrides' keys, as in main.py
    main.parse_flags(argv)
    assert (main._CONFIG.value.experiment.seeds, main._CONFIG.value.train.lr) == ((2,), 0.2)


# -- output to files, TensorBoard (the same run: config.progress and config.tensorboard on) ------------------------

MODEL = "cifar_resnet_14_4"
EPOCH_LINE = re.compile(rf"imp {MODEL} level (\d)( \(dense\))?: epoch ([12])/2, step (12|24)/24, loss \d+\.\d{{3}}, "
                        r"acc [01]\.\d{3}, test acc [01]\.\d{3}, [\d,]+ img/s")
RESULT_LINE = re.compile(rf"level  [01] \| imp       \| {MODEL} \| sparsity +\d+\.\d\d% \| test accuracy +\d+\.\d\d%")
OTHER_LINES = [re.compile(pattern) for pattern in (
    r"elax imp run in \S+ on \d+ cpu device\(s\)", r"data: digits, 1437 training images, .*", r"", r"\|[-:|\d. ]+\|",
    r"\| sparsity % \| remaining % \| IMP ResNet-14 \(w4\) \|")]


def test_output_to_files_is_plain_lines_with_a_line_per_epoch(uninterrupted):
    workdir, out, err = uninterrupted
    for text in (out, err):
        assert "\x1b" not in text and "\r" not in text
    lines = out.splitlines()
    for line in lines:   # every line whole: none glued to another, none of a bar
        assert EPOCH_LINE.fullmatch(line) or RESULT_LINE.fullmatch(line) or any(
            pattern.fullmatch(line) for pattern in OTHER_LINES), line
    assert not [line for line in err.splitlines() if "epoch" in line or "step/s" in line]
    expected = []
    for level in (0, 1):
        for m in metrics_lines(workdir, level):
            expected.append(f"imp {MODEL} level {level}{' (dense)' if level == 0 else ''}: epoch {m['epoch']}/2, step "
                            f"{m['step']}/24, loss {m['train_loss']:.3f}, acc {m['train_accuracy']:.3f}, test acc "
                            f"{m['test_accuracy']:.3f}, {m['images_per_s']:,.0f} img/s")
        expected.append(f"level  {level} |")   # each level's result line follows its epochs
    shown = [line if EPOCH_LINE.fullmatch(line) else line[:10] for line in lines
             if EPOCH_LINE.fullmatch(line) or RESULT_LINE.fullmatch(line)]
    assert shown == expected


def metrics_lines(workdir, level):
    with open(os.path.join(workdir, f"level_{level:02d}", "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def read_scalars(folder):
    """{(tag, step): value} of the scalars in the TensorBoard event files of `folder`, parsed from their TFRecord
    framing: u64 length, u32 its CRC, the Event protobuf, u32 its CRC."""
    from tensorboardX.proto import event_pb2
    from elax.runs import outputs
    scalars = {}
    for path in glob.glob(os.path.join(folder, outputs.EVENTS_GLOB)):
        with open(path, "rb") as f:
            data = f.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                assert (value.tag, event.step) not in scalars
                scalars[value.tag, event.step] = value.simple_value
    return scalars


def test_tensorboard_has_a_scalar_per_metric_per_epoch(uninterrupted):
    pytest.importorskip("tensorboardX")
    from elax.runs import outputs
    workdir, _, _ = uninterrupted
    for level in (0, 1):
        assert read_scalars(os.path.join(workdir, f"level_{level:02d}")) == {
            (outputs.SCALARS[key], m["step"]): float(np.float32(m[key]))
            for m in metrics_lines(workdir, level) for key in outputs.SCALARS}
    assert sorted(outputs.SCALARS.values()) == ["test/accuracy", "test/loss", "train/accuracy", "train/images_per_s",
                                             "train/loss", "train/lr"]
