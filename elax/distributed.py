"""Multi-process runs on JAX's multi-controller runtime: every host runs the same `main.py` command; process 0
writes the workdir's files, every process feeds its share of each batch and takes part in Orbax checkpoints.

Started by flags (`--coordinator=HOST:PORT --num_processes=N --process_id=I`), by $JAX_COORDINATOR_ADDRESS, or
under SLURM with more than one task (JAX reads the cluster from SLURM's environment).
"""

import os


def requested(coordinator: str | None = None, num_processes: int | None = None,
              process_id: int | None = None) -> bool:
    """Whether this process was started as one of several."""
    return bool(coordinator or (num_processes or 1) > 1 or process_id is not None
                or os.environ.get("JAX_COORDINATOR_ADDRESS") or int(os.environ.get("SLURM_NTASKS", "1")) > 1)


def _check_address(coordinator: str | None) -> None:
    host, _, port = (coordinator or "").rpartition(":")
    if coordinator and not (host and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"--coordinator={coordinator!r} is not HOST:PORT with a port in 1-65535.")


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the run (call before any JAX computation); processes other than 0 stop writing workdir files."""
    import jax
    from elax import workdir
    try:
        _check_address(coordinator)
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
                         "(the README's multi-host section).") from None
    workdir.set_primary(jax.process_index() == 0)
