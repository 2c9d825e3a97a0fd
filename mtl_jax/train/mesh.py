"""Training on a device mesh: ``fit(..., mesh=make_mesh({"data": -1}))``, data-parallel, with
parameters optionally sharded FSDP-style (``make_mesh({"data": -1, "fsdp": 4})``).

A :class:`jax.sharding.Mesh` spreads every training batch's rows over all its devices
(``NamedSharding(mesh, P(("data", "fsdp")))``). The train state (parameters, optimizer and
balancing state) is placed by :func:`place_state`:

* on a ``data``-only mesh, one copy on each device (``P()``, replicated);
* with an ``fsdp`` axis of size k > 1, every array of at least ``min_size`` elements (default
  :data:`FSDP_MIN_SIZE`, 4 MiB of float32) is split in k along its largest dimension that k
  divides (``P(..., "fsdp", ...)``), the rest replicated: the rule reads only shapes, so a
  parameter and its Adam moments are split alike. This is ZeRO-3/FSDP (Rajbhandari et al. 2020,
  "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models"): each device holds
  1/k of the large arrays, and XLA gathers a layer's parameters where the step uses them and
  reduce-scatters their gradients.

The train step is the same program: XLA partitions it (GSPMD), so per-task losses, metric
statistics and every weighting's and aggregator's inputs (the losses, the Gramians of the task
gradients, at both gradient levels) are reduced over the whole global batch once per step,
and every device applies the same update; no method state can diverge between devices, and
the placed state keeps its layout from step to step (nothing recompiles). Validation batches
are split over the devices the same way (padded with masked rows to a multiple of their
count). On one device nothing is placed at all.

:func:`make_mesh` builds the mesh from a config's ``mesh`` field: ``{"data": n}`` or
``{"data": n, "fsdp": k}`` (``-1`` on one axis: as many devices as are left). With several
processes (:mod:`mtl_jax.distributed`) the mesh spans every process's devices and each process
gives its own devices their rows and their part of the state.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Iterable, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mtl_jax.distributed import global_array, process_count

DATA_AXIS = "data"
FSDP_AXIS = "fsdp"
AXES = (DATA_AXIS, FSDP_AXIS)
FSDP_MIN_SIZE = 2 ** 20  # elements: arrays smaller than 4 MiB of float32 stay replicated


def make_mesh(spec: Mapping[str, int] | None) -> Mesh | None:
    """The mesh a config's ``mesh`` field asks for, or None where it spans one device.

    ``spec``: ``{"data": n}`` or ``{"data": n, "fsdp": k}`` devices per axis; ``-1`` on one axis:
    every device left (all of them for ``{"data": -1}``); None or ``{}``: one device.
    """
    spec = dict(spec or {})
    unknown = sorted(set(spec) - set(AXES))
    if unknown:
        raise ValueError(f"mesh: unknown axis {unknown}; the axes are {list(AXES)} (e.g. mesh={{'data': -1}}: "
                         "every device, data-parallel; mesh={'data': -1, 'fsdp': 4}: parameters split in 4)")
    if not spec:
        return None
    for axis, count in spec.items():
        if not isinstance(count, int) or isinstance(count, bool) or count == 0 or count < -1:
            raise ValueError(f"mesh: {axis} must be a number of devices >= 1, or -1 for all, got {count!r}")
    if list(spec.values()).count(-1) > 1:
        raise ValueError(f"mesh: at most one axis may be -1 (every device left), got {spec}")
    available = jax.device_count()
    fixed = math.prod(count for count in spec.values() if count != -1)
    if -1 in spec.values():
        if available % fixed:
            raise ValueError(f"mesh: {spec} needs a multiple of {fixed} devices, {available} available")
        spec = {axis: available // fixed if count == -1 else count for axis, count in spec.items()}
    total = math.prod(spec.values())
    if total > available:
        raise ValueError(f"mesh: {spec} asks for {total} devices, {available} available "
                         f"({jax.devices()[0].platform})")
    if total == 1:
        return None
    shape = (spec.get(DATA_AXIS, 1), spec.get(FSDP_AXIS, 1))
    if shape[1] == 1:
        return Mesh(np.array(jax.devices()[:total]), (DATA_AXIS,), axis_types=(AxisType.Auto,))
    return Mesh(np.array(jax.devices()[:total]).reshape(shape), AXES, axis_types=(AxisType.Auto,) * 2)


def data_size(mesh: Mesh | None) -> int:
    """The number of devices a batch's rows are split over (every device of the mesh)."""
    return 1 if mesh is None else int(mesh.size)


def fsdp_size(mesh: Mesh | None) -> int:
    return 1 if mesh is None else int(dict(mesh.shape).get(FSDP_AXIS, 1))


def check_batch_size(mesh: Mesh | None, batch_size: int, what: str = "batch_size") -> None:
    """The batch's rows split evenly over the mesh's devices (padding rows included)."""
    if batch_size % data_size(mesh):
        raise ValueError(f"{what} {batch_size} does not split over the mesh's {data_size(mesh)} devices: "
                         f"use a multiple of {data_size(mesh)}")


def check_fsdp_min_size(min_size: int) -> None:
    if not isinstance(min_size, int) or isinstance(min_size, bool) or min_size < 1:
        raise ValueError(f"fsdp_min_size must be a whole number of elements >= 1, got {min_size!r}")


def state_spec(shape: tuple[int, ...], fsdp: int, min_size: int = FSDP_MIN_SIZE) -> P:
    """Where an array of ``shape`` lives: split over ``fsdp`` along its largest dimension ``fsdp``
    divides when it has at least ``min_size`` elements; replicated otherwise."""
    if fsdp > 1 and math.prod(shape) >= min_size:
        for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
            if shape[dim] % fsdp == 0:
                return P(*[FSDP_AXIS if d == dim else None for d in range(dim + 1)])  # as JAX writes it back
    return P()


def state_shardings(mesh: Mesh, tree: Any, min_size: int = FSDP_MIN_SIZE) -> Any:
    """The :class:`NamedSharding` of every array of ``tree`` (arrays or shape structs)."""
    fsdp = fsdp_size(mesh)
    return jax.tree.map(lambda leaf: NamedSharding(mesh, state_spec(tuple(np.shape(leaf)), fsdp, min_size)), tree)


def place_state(mesh: Mesh | None, tree: Any, min_size: int = FSDP_MIN_SIZE) -> Any:
    """``tree`` placed on the mesh (:func:`state_spec`: replicated, large arrays split over
    ``fsdp``); unchanged without a mesh."""
    if mesh is None:
        return tree
    return jax.tree.map(global_array, tree, state_shardings(mesh, tree, min_size))


def process_shard(mesh: Mesh | None, batch_size: int) -> tuple[int, int]:
    """``(index, count)``: this process's devices hold rows ``[index * B / count, (index + 1) * B / count)``
    of every ``batch_size``-row batch, so it reads only those (``batches(..., shard=...)``);
    ``(0, 1)`` with one process. An error names a mesh whose rows of a process are not one
    contiguous block (the devices of each process must be neighbours on the mesh, as
    ``jax.devices()`` orders them)."""
    if mesh is None or process_count() == 1:
        return 0, 1
    held = NamedSharding(mesh, P(tuple(mesh.axis_names))).addressable_devices_indices_map((batch_size,))
    return shard_of([index[0].indices(batch_size)[:2] for index in held.values()], batch_size)


def shard_of(blocks: Iterable[tuple[int, int]], batch_size: int) -> tuple[int, int]:
    """``(index, count)`` of the rows ``[start, stop)`` of ``blocks`` (one per device of a process)
    when together they are block ``index`` of ``count`` equal blocks of the batch."""
    blocks = sorted(set(blocks))
    start, stop = blocks[0][0], blocks[-1][1]
    size = stop - start
    if any(a[1] != b[0] for a, b in itertools.pairwise(blocks)) or batch_size % size or start % size:
        raise ValueError(f"this process's devices hold rows {blocks} of a {batch_size}-row batch, not one block of "
                         "an even split: build the mesh from jax.devices() in their order (make_mesh does)")
    return start // size, batch_size // size


def shard_batches(mesh: Mesh | None, batches: Iterable[dict], global_rows: int | None = None) -> Iterator[dict]:
    """Each batch with its rows split over every device of the mesh (unchanged without a mesh).

    ``global_rows``: each process's batches hold only its own rows (its :func:`process_shard` of
    batches of ``global_rows`` rows), and the global batch is assembled from every process's part
    (``jax.make_array_from_process_local_data``); None: every process holds the whole batch.
    """
    if mesh is None:
        yield from batches
        return
    rows = NamedSharding(mesh, P(tuple(mesh.axis_names)))
    for batch in batches:
        if global_rows is not None and process_count() > 1:
            yield jax.tree.map(lambda part: jax.make_array_from_process_local_data(
                rows, part, (global_rows, *np.shape(part)[1:])), batch)
        else:
            yield jax.tree.map(lambda whole: global_array(whole, rows), batch)
