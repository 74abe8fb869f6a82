"""Multi-process runs on JAX's multi-controller runtime: every host runs the same `main.py` command; process 0
writes the workdir's files, every process feeds its share of each batch and takes part in Orbax checkpoints.

Started by flags (`--coordinator=HOST:PORT --num_processes=N --process_id=I`), by $JAX_COORDINATOR_ADDRESS, or
under SLURM with more than one task (JAX reads the cluster from SLURM's environment).
"""

import errno
import json
import os
import socket
import sys

from elax import config as config_lib, watchdog, workdir

_joined = False  # whether this process joined a multi-process run


def joined() -> bool:
    """Whether this process is one of several of a multi-process run."""
    return _joined


def requested(coordinator: str | None = None, num_processes: int | None = None,
              process_id: int | None = None) -> bool:
    """Whether this process was started as one of several."""
    return bool(coordinator or (num_processes or 1) > 1 or process_id is not None
                or os.environ.get("JAX_COORDINATOR_ADDRESS") or int(os.environ.get("SLURM_NTASKS", "1")) > 1)


def _check_address(coordinator: str | None) -> None:
    host, _, port = (coordinator or "").rpartition(":")
    if coordinator and not (host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"--coordinator={coordinator!r} is not HOST:PORT with a port in 1-65535.")


def _check_port_free(coordinator: str | None, process_id: int | None) -> None:
    """Process 0 serves the coordinator's port; JAX crashes (a segfault) when that port is taken."""
    if not coordinator or process_id != 0:
        return
    port = int(coordinator.rpartition(":")[2])
    family = socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET  # JAX listens on [::]:PORT
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as JAX does: a port a finished run left is free
        try:
            probe.bind(("", port))
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise ValueError(f"port {port} of --coordinator={coordinator} is in use on this host (another run's "
                             "coordinator?). Pick a free port, the same on every host.") from None


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the run (call before any JAX computation); processes other than 0 stop writing workdir files."""
    import jax
    try:
        _check_address(coordinator)
        _check_port_free(coordinator, process_id)
        # CPU hosts exchange collectives through gloo (the default CPU backend has none across processes); GPUs
        # and TPUs ignore this setting.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        if coordinator:  # JAX waits silently for every process to join: say so
            print(f"Joining {coordinator} as process {process_id} of {num_processes}: waiting for all of them "
                  "to start (JAX gives up after 5 minutes).", flush=True)
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except ValueError as error:  # ours and JAX's checks of the three settings
        raise ValueError(f"cannot start a multi-process run: {error} Pass --coordinator=HOST:PORT "
                         "--num_processes=N --process_id=I (0 <= I < N) on every host, or start under SLURM "
                         "(docs/scaling.md, 'Multi-host runs').") from None
    global _joined
    _joined = True
    workdir.set_primary(jax.process_index() == 0)


def check_same_run(config: dict, workdir_path: str) -> None:
    """Refuse processes started with different configs, workdirs, elax code or JAX versions, which would wait for
    each other forever at the first collective they disagree on. `data.dir` may differ: each host may read its
    own copy of the data."""
    if not _joined:
        return
    import jax
    mine = {**_without_host_local(config), "workdir": workdir_path,
            "software": {"jax": jax.__version__, "elax_code_sha256": _code_digest()}}
    theirs = [json.loads(text) for text in _gather_texts(json.dumps(mine, sort_keys=True, default=str))]
    first = workdir.flatten(theirs[0])
    for index, other in enumerate(map(workdir.flatten, theirs)):
        differences = [f"{k}: {first.get(k)!r} vs {other.get(k)!r}" for k in sorted(set(first) | set(other))
                       if first.get(k) != other.get(k)]
        if differences:
            raise ValueError(f"process {index} was started with another config than process 0 "
                             f"({'; '.join(differences[:5])}). Start every process with the same --config, "
                             "--config.* overrides and --workdir (data.dir may differ between hosts), from the "
                             "same elax checkout and JAX version.")


def _without_host_local(config: dict) -> dict:
    """`config` with the keys that may differ between hosts (`elax.config`, e.g. data.dir) set to None."""
    out = {section: dict(values) if isinstance(values, dict) else values for section, values in config.items()}
    for name, key in config_lib.KEYS.items():
        section, _, option = name.rpartition(".")
        if key.host_local:
            out[section][option] = None
    return out


def _code_digest() -> str:
    """A digest of elax's Python files: hosts running other code would issue other collectives."""
    import hashlib
    import pathlib
    digest = hashlib.sha256()
    for path in sorted(pathlib.Path(__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _gather_texts(text: str) -> list[str]:
    """`text` of every process, in process order."""
    import numpy as np
    from jax.experimental import multihost_utils
    data = np.frombuffer(text.encode(), np.uint8)
    lengths = multihost_utils.process_allgather(np.int32(len(data)))
    padded = np.zeros(int(max(lengths)), np.uint8)
    padded[:len(data)] = data
    rows = multihost_utils.process_allgather(padded)
    return [bytes(row[:length]).decode() for row, length in zip(np.asarray(rows), lengths)]


def watch_peers(on_peer_lost) -> None:
    """End this process at once when another process of the run dies (`elax.watchdog`), after `on_peer_lost(why)`
    has said so; it returns the exit code."""
    if not _joined:
        return
    import jax
    state = _jax_state()
    host = state.coordinator_address.rpartition(":")[0].strip("[]")
    watchdog.start(state.client, jax.process_index(), jax.process_count(), host, on_peer_lost)


def _jax_state():
    """JAX's multi-process state (coordination client, coordinator address): private, as Orbax uses it too."""
    from jax._src import distributed as jax_distributed
    return jax_distributed.global_state


def any_process(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true when it is true in any process: decisions that every process must take together (a
    checkpoint save is collective) but that rest on what differs between processes (clocks, signals)."""
    if not _joined:
        return flags
    import numpy as np
    from jax.experimental import multihost_utils
    gathered = np.asarray(multihost_utils.process_allgather(np.array(flags, np.int32)))
    return tuple(bool(flag) for flag in gathered.reshape(-1, len(flags)).any(axis=0))


# What a collective's error says when another process of the run stopped: gloo's socket errors on CPU hosts, the
# coordination service's once a heartbeat is missed.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "heartbeat timeout")


def lost_a_peer(error: BaseException) -> bool:
    """Whether `error` is a collective of a multi-process run that failed because another process stopped."""
    import jax
    return _joined and isinstance(error, jax.errors.JaxRuntimeError) and any(s in str(error) for s in _PEER_GONE)


def exit_at_once(code: int) -> None:
    """End this process now, without JAX's exit handler: it waits at a shutdown barrier for the process that
    stopped until its heartbeat times out (~90 s), then aborts with a C++ stack trace."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def end_after_error(code: int, wait_seconds: int = 10) -> None:
    """After an error in a multi-process run. When every process failed (a config error, a divergence or a stop:
    they fail together), they meet here and JAX shuts down as usual. When this one failed alone (its disk, its
    data), the others train on or wait in a collective for it, and JAX's shutdown waited 5 minutes for them and
    then aborted them all; so after `wait_seconds` this one leaves at once, and they stop with one line each (exit
    5), told by `elax.watchdog` or by their next collective's error."""
    if not _joined:
        return
    try:
        _jax_state().client.wait_at_barrier("elax_failed", wait_seconds * 1000)
    except Exception:  # the barrier timed out: another process is still working
        exit_at_once(code)


def barrier(name: str) -> None:
    """Wait until every process gets here (after process 0 changed files that the others read next)."""
    if _joined:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
