"""Multi-process runs on JAX's multi-controller runtime: every host runs the same `main.py` command; process 0
writes the workdir's files, every process feeds its share of each batch and takes part in Orbax checkpoints.

Started by flags (`--coordinator=HOST:PORT --num_processes=N --process_id=I`), by $JAX_COORDINATOR_ADDRESS, or
under SLURM with more than one task (JAX reads the cluster from SLURM's environment).
"""

import os


def requested(coordinator: str | None = None, num_processes: int | None = None) -> bool:
    """Whether this process was started as one of several."""
    return bool(coordinator or (num_processes or 1) > 1 or os.environ.get("JAX_COORDINATOR_ADDRESS")
                or int(os.environ.get("SLURM_NTASKS", "1")) > 1)


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Join the run (call before any JAX computation); processes other than 0 stop writing workdir files."""
    import jax
    from elax import workdir
    # CPU hosts exchange collectives through gloo (the default CPU backend has none across processes); GPUs and
    # TPUs ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator, num_processes, process_id)
    except ValueError as error:  # JAX's checks of the three settings
        raise ValueError(f"cannot start a multi-process run: {error} Pass --coordinator=HOST:PORT "
                         "--num_processes=N --process_id=I (0 <= I < N) on every host, or start under SLURM "
                         "(the README's multi-host section).") from None
    workdir.set_primary(jax.process_index() == 0)
