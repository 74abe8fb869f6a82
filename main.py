"""elax command line: `python main.py --config configs/cifar_resnet.py --workdir runs/r20`.

The config file picks the mode (imp, transfer, baseline, experiment, report); `--config.x.y=v` overrides any
key. Running the same command again resumes the run in --workdir.
"""

import os
import signal
import sys
import traceback

from elax import exits, stopping   # standard library only: the handlers below need them before the slow imports


def _interrupted_before_start(signum, frame):
    """Ctrl-C or SIGTERM while Python imports JAX: nothing is written yet, so end at once (a KeyboardInterrupt
    raised there may land in a garbage-collection callback, which drops it, or print an import traceback)."""
    os._exit(exits.error("interrupted before the run started; nothing was written.", exits.INTERRUPTED))


if __name__ == "__main__":   # not in a process that imports this module (the tests)
    signal.signal(signal.SIGINT, _interrupted_before_start)
    signal.signal(signal.SIGTERM, _interrupted_before_start)

from absl import app, flags, logging  # noqa: E402 (after the handlers: importing takes seconds)
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "A get_config() file (configs/*.py); `file.py:arg` passes "
                                          "arg. Required, unless --list.")
_LIST = flags.DEFINE_bool("list", False, "Print the modes, model families, datasets, baselines, transfer strategies, "
                          "optimizers, schedules and mask updates this installation knows, then exit.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created, or resumed if it exists). "
                               "Default: runs/<config file name>.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "Multi-process runs: HOST:PORT of process 0 (every process "
                                   "runs the same command; see docs/scaling.md).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process runs: how many processes take part.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index, 0..N-1.")


def config_path() -> str:
    """The --config file's path, without its `:arg`."""
    return config_flags.get_config_filename(flags.FLAGS["config"]).split(":")[0]


def default_workdir() -> str:
    return os.path.join("runs", os.path.splitext(os.path.basename(config_path()))[0])


def missing_config_message(path: str) -> str | None:
    """One line naming a --config file that does not exist and the configs next to where it was looked for
    (ml_collections would only fail at the config's first use, with its loader's error); None if it exists."""
    if os.path.isfile(path):
        return None
    folder = os.path.dirname(path) or "."
    known = [f for f in sorted(os.listdir(folder)) if f.endswith(".py") and _defines_get_config(
        os.path.join(folder, f))] if os.path.isdir(folder) else []
    where = (f"Config files in {folder}: {', '.join(known)}." if known else
             f"Relative paths start at the current directory, {os.getcwd()}.")
    return f"--config: no such file {path!r}. {where}"


def _defines_get_config(path: str) -> bool:
    with open(path, errors="replace") as file:
        return any(line.startswith("def get_config(") for line in file)


def parse_flags(argv):
    """absl's flag parsing, with every mistake in the command line as one `elax: error:` line and exit code 2."""
    config_folder_importable(argv)
    try:
        return flags.FLAGS(last_overrides_win(argv))
    except flags.Error as error:  # a value of the wrong type, an error inside the config file, ...
        message = flag_error_message(str(error))
    except SyntaxError as error:  # in the config file or a module it imports; not wrapped by absl
        message = syntax_error_message(error)
    except (AttributeError, KeyError) as error:  # ml_collections, for `--config.<unknown key>=...`
        message = unknown_key_message(error, argv)
        if message is None:  # not an override's key (e.g. a bug inside the config file): keep the traceback
            raise
    sys.exit(exits.error(message, exits.BAD_INPUT))


def config_folder_importable(argv: list[str]) -> None:
    """Put the --config file's folder first on the import path, as Python does for a script: a config file imports
    the modules beside it that register a model family, a dataset or a baseline of one's own."""
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else (
            arg.split("=", 1)[1] if arg.startswith("--config=") else None)
        if value:
            folder = os.path.dirname(os.path.abspath(value.split(":")[0]))
            if folder not in sys.path:
                sys.path.insert(0, folder)


def last_overrides_win(argv: list[str]) -> list[str]:
    """`argv` without the earlier ones of repeated `--config.KEY=VALUE` overrides: ml_collections joins repeated
    tuples (seeds (0, 1) then (2,) gave (0, 1, 2)) where the last wins for numbers and in any shell tool."""
    def key(arg: str) -> str | None:
        return arg.split("=", 1)[0] if arg.startswith("--config.") and "=" in arg else None

    last = {key(arg): i for i, arg in enumerate(argv) if key(arg)}
    return [arg for i, arg in enumerate(argv) if key(arg) is None or last[key(arg)] == i]


def flag_error_message(message: str) -> str:
    """absl's message in one line: a config file's traceback shrinks to its last line, e.g.
    'flag --config=c.py:5: Error whilst parsing config file: TypeError: get_config() takes 0 positional ...'."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if len(lines) == 1:
        return lines[0]
    return (f"{lines[0]} {lines[-1]} (`--config FILE:ARG` calls the file's get_config(ARG); see the file for the "
            "arguments it takes)")


def syntax_error_message(error: SyntaxError) -> str:
    """'--config: FILE, line L, column C: SyntaxError: MESSAGE. ...' (the file may be a module the config file
    imports). Not the line's text: it may hold `config.a.b`, which elax's errors print as the flag."""
    column = f", column {error.offset}" if error.offset else ""
    return (f"--config: {error.filename}, line {error.lineno}{column}: {type(error).__name__}: {error.msg}. Fix the "
            "file and run the same command.")


def unknown_key_message(error: Exception, argv) -> str | None:
    """'--config.a.b: the config has no key 'b'. <advice>', or None if no override names that key."""
    message = error
    while isinstance(message, BaseException) and message.args:  # AttributeError(KeyError(text))
        message = message.args[0]
    key, _, suggestion = str(message).partition("\n")
    flag = next((a.split("=")[0] for a in argv
                 if a.startswith("--config.") and key.strip("'") in a.split("=")[0].split(".")), None)
    if flag is None:
        return None
    advice = suggestion or ("--workdir is a flag of its own: --workdir=PATH" if key == "'workdir'" else
                            "Overrides can only set keys that the config file defines.")
    return f"{flag}: the config has no key {key}. {advice}"


def handle_stop_signals() -> None:
    """Once the run may start: Ctrl-C and SIGTERM stop it (`_stop`), and a second one ends the process at once even
    while the main thread waits inside XLA, where no Python handler runs (`stopping.exit_on_second_signal`)."""
    _handle_stop_signals(_stop)  # also replaces the SIGTERM handler JAX installs, which only logs the signal
    stopping.exit_on_second_signal(_stopped_at_once, exits.INTERRUPTED)


def _stopped_at_once() -> None:
    exits.error("interrupted twice: stopped at once. The same command resumes the run from its last checkpoint; "
                "finished levels are kept.", exits.INTERRUPTED)


def _stop(signum, frame):
    """Ctrl-C or SIGTERM (as schedulers stop jobs) once the run has started. One process stops at once (the last
    checkpoint stays); `STOP` backs that up, since Python drops an exception raised in a garbage-collection
    callback. The processes of a multi-process run stop together at the next epoch end, after saving (one of them
    stopping alone would strand the others in a collective); a second signal stops at once."""
    from elax import distributed
    if not stopping.STARTED.is_set():   # still importing JAX and elax's runs: nothing is written yet
        _interrupted_before_start(signum, frame)
    first = not stopping.STOP.is_set()
    stopping.STOP.set()
    if distributed.joined() and first:
        print("Stopping at the next epoch end, after saving a checkpoint (again to stop at once).", flush=True)
        return
    raise KeyboardInterrupt


def _handle_stop_signals(handler) -> None:
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main(argv):
    if len(argv) > 1:
        return exits.error(f"unexpected arguments {argv[1:]}. Options are --config FILE, --workdir DIR and "
                           "--config.KEY=VALUE overrides, each as one argument (python main.py --help).",
                           exits.BAD_INPUT)
    if _LIST.value:
        from elax import cli
        print(cli.listing())
        return 0
    if flags.FLAGS["config"].value is None:
        return exits.error("--config FILE is required (e.g. --config configs/quickstart.py; python main.py --list "
                           "names what elax knows, --help the flags).", exits.BAD_INPUT)
    if message := missing_config_message(config_path()):
        return exits.error(message, exits.BAD_INPUT)
    logging.set_verbosity(logging.WARNING)  # Orbax and JAX log every checkpoint step at INFO
    from elax import cli, distributed, watchdog  # after flag parsing, so `--help` stays fast
    if distributed.requested(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value):
        # JAX waits for the other processes inside C++, where no Python handler runs: the signals' default
        # action ends the process (nothing is written yet).
        _handle_stop_signals(signal.SIG_DFL)
        try:
            distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
        except ValueError as error:
            return exits.error(error, exits.BAD_INPUT)
        distributed.watch_peers(on_peer_lost=exits.report_lost_peer)
    handle_stop_signals()
    try:
        code = cli.main(_CONFIG.value, _WORKDIR.value or default_workdir())
    except Exception:  # a bug or a crash: its traceback, then end as a multi-process run must
        if not distributed.joined():
            raise
        traceback.print_exc()
        code = 1
    watchdog.ending(finished=code == 0)
    if code == exits.PEER_LOST or code == exits.INTERRUPTED and not distributed.joined():
        # Interrupted while XLA compiles, the interpreter's teardown could crash (a segfault after elax's line);
        # what is on disk is kill-safe, so skip it.
        distributed.exit_at_once(code)
    elif code:
        distributed.end_after_error(code)
    return code


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
