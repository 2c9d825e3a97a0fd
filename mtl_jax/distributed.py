"""Several processes (hosts, or one process per GPU): JAX's multi-controller model.

Every process runs the same command; ``jax.distributed.initialize`` connects them, after which
``jax.devices()`` lists every process's devices and a mesh spans them all
(:mod:`mtl_jax.train.mesh`). The train step is then one program over the global mesh:

* every process draws the same order of examples (same data, seed and epoch) and reads only
  the rows of each global batch its own devices hold (``batches(..., shard=...)``,
  :func:`mtl_jax.train.mesh.process_shard`), assembled into the global batch by
  ``jax.make_array_from_process_local_data`` (a task mixture likewise, each dataset's batch
  split), a function ``(epoch, shard)`` of batches likewise reads only this process's part
  (:mod:`mtl_jax.data.batch_streams`); any other iterable of batches is read whole by every
  process, which hands its devices their rows (:func:`global_array`). The
  run is the one-process run on the same mesh, up to float rounding;
* the train state starts identical everywhere (same seed) and is placed the same way;
* only process 0 writes files: ``config.json``, ``history.json``, logs, TensorBoard, plots
  and ``results.json`` (:func:`writes_files`; the others' writes go nowhere) and holds the
  workdir's lock; orbax checkpoints are written by all processes together, each its shards,
  and restore onto any number of devices or processes (:mod:`mtl_jax.train.checkpoint`).

``mtl-jax train --coordinator HOST:PORT --num-processes N --process-id I`` connects explicitly;
``--distributed`` lets JAX find the cluster (SLURM, Cloud TPU pods, Kubernetes, ...). Importing
this module does not import JAX.
"""
from __future__ import annotations

import sys
from typing import Any


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False) -> bool:
    """Connects this process to the others (``jax.distributed.initialize``) before JAX starts.

    Either all of ``coordinator`` (``"host:port"`` of process 0), ``num_processes`` and
    ``process_id``, or ``auto=True`` (JAX detects the cluster), or nothing (one process: returns
    False). On CPU the processes' collectives run over Gloo.
    """
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    named = [name for name, value in given.items() if value is not None]
    if not named and not auto:
        return False
    if named and len(named) < 3:
        missing = sorted(set(given) - set(named))
        raise ValueError(f"several processes need coordinator, num_processes and process_id together; "
                         f"missing {missing} (or use auto-detection alone)")
    if named and auto:
        raise ValueError("give either the coordinator, num_processes and process_id, or auto-detection, not both")
    if named:
        host, _, port = str(coordinator).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"coordinator must be HOST:PORT (process 0's address), got {coordinator!r}")
        for name, value, low in (("num_processes", num_processes, 1), ("process_id", process_id, 0)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if process_id >= num_processes:
            raise ValueError(f"process_id {process_id} is not below num_processes {num_processes}")
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes talk over Gloo
    if named:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()
    return True


def process_count() -> int:
    """The number of connected processes (1 unless :func:`initialize` connected several)."""
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return 1
    return jax.process_count()


def process_position() -> tuple[int, int]:
    """``(jax.process_index(), jax.process_count())``; ``(0, 1)`` with one process."""
    if process_count() == 1:
        return 0, 1
    import jax

    return jax.process_index(), jax.process_count()


def writes_files() -> bool:
    """Whether this process writes the run's files: process 0 of several, or the only one."""
    jax = sys.modules.get("jax")
    return jax is None or not jax.distributed.is_initialized() or jax.process_index() == 0


def wait_for_all(name: str) -> None:
    """Returns when every process has called it with ``name`` (a barrier); at once with one process."""
    if process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def as_process_0_sees(values: list[int]) -> list[int]:
    """Process 0's ``values`` (whole numbers) on every process; ``values`` themselves with one.

    For decisions every process must take alike from files only process 0 may see (its own
    disk): which runs of a grid are finished, whether a workdir is refused."""
    if process_count() == 1:
        return list(values)
    import numpy as np
    from jax.experimental import multihost_utils

    return [int(v) for v in np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(values, np.int32)))]


def global_array(value: Any, sharding) -> Any:
    """``value`` (the same on every process) as an array laid out by ``sharding``; with several
    processes each gives only its own devices their part."""
    import jax
    import numpy as np

    if process_count() == 1 or (isinstance(value, jax.Array) and not value.is_fully_addressable):
        return jax.device_put(value, sharding)  # one process, or an array already spread over the processes
    host = np.asarray(value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
