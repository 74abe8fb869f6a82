"""The exit codes of elax's command lines and the one way they print an error.

0 done; 2 bad input or damaged files; 3 training diverged; 4 workdir busy; 5 another process of a multi-process
run stopped; 130 Ctrl-C or SIGTERM (as shells report a process ended by SIGINT).
"""

import re
import sys
import threading

BAD_INPUT = 2
DIVERGED = 3
BUSY = 4
PEER_LOST = 5
INTERRUPTED = 130

# Library and config errors name config keys as Python does (`config.train.lr`); on the command line they are
# `--config.train.lr` flags.
# Top-level keys are named one by one (this module imports nothing of elax): `config.json` is a file, not a flag.
_CONFIG_KEY = re.compile(r"(?<![\w./-])config\.(?=[a-z_]+\.[a-z_]|(?:mode|seed|progress|tensorboard)\b)")


def as_flags(message: str) -> str:
    """`message` with every `config.section.key` spelt as the command line's `--config.section.key`."""
    return _CONFIG_KEY.sub("--config.", message)


def error(message, code: int) -> int:
    """Print `elax: error: MESSAGE` (config keys as flags) on stderr; returns `code`."""
    print(f"elax: error: {as_flags(str(message))}", file=sys.stderr, flush=True)
    return code


def report_lost_peer(why: str) -> int:
    """The one line of a process whose multi-process run lost another process (`why`: how it learnt of it);
    returns PEER_LOST. Printed once: a collective's error and the watchdog's thread may both learn of it, and the
    second waits for the first's line, since it may end the process as soon as this returns."""
    global _lost_peer_reported
    with _lost_peer_lock:
        if not _lost_peer_reported:
            _lost_peer_reported = True
            error(f"another process of this run stopped ({why}), and this one cannot go on alone. Finished levels "
                  "and the last checkpoint are kept: start every process again with the same command to resume.",
                  PEER_LOST)
    return PEER_LOST


_lost_peer_lock = threading.Lock()
_lost_peer_reported = False
