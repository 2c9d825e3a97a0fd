"""Data-parallel training on a device mesh: ``fit(..., mesh=make_mesh({"data": -1}))``.

A :class:`jax.sharding.Mesh` with a ``data`` axis spreads every training batch's rows over that
axis's devices (``NamedSharding(mesh, P("data"))``) and keeps one copy of the train state
(parameters, optimizer and balancing state) on each (``P()``, replicated). The train step is
the same program: XLA partitions it, so per-task losses, metric statistics and every
weighting's and aggregator's inputs (the losses, the Gramians of the task gradients) are
reduced over the whole global batch once per step, and every device applies the same update;
no method state can diverge between devices. On one device nothing is placed at all.

:func:`make_mesh` builds the mesh from a config's ``mesh`` field, ``{"data": n}`` (``-1``: every
device JAX sees). Parameter sharding (FSDP) and multi-host runs are not here yet (issue 21).
"""
from __future__ import annotations

from typing import Any, Iterable, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(spec: Mapping[str, int] | None) -> Mesh | None:
    """The mesh a config's ``mesh`` field asks for, or None where it spans one device.

    ``spec``: ``{"data": n}``, n devices on the data axis (``-1``: all of them); None or ``{}``:
    one device.
    """
    spec = dict(spec or {})
    unknown = sorted(set(spec) - {DATA_AXIS})
    if unknown:
        raise ValueError(f"mesh: unknown axis {unknown}; the mesh has one axis, {DATA_AXIS!r} (e.g. "
                         "mesh={'data': -1}: every device)")
    if not spec:
        return None
    count, available = spec[DATA_AXIS], jax.device_count()
    if not isinstance(count, int) or isinstance(count, bool) or count == 0 or count < -1:
        raise ValueError(f"mesh: {DATA_AXIS} must be a number of devices >= 1, or -1 for all, got {count!r}")
    if count == -1:
        count = available
    if count > available:
        raise ValueError(f"mesh: {DATA_AXIS}={count} devices asked for, {available} available "
                         f"({jax.devices()[0].platform})")
    if count == 1:
        return None
    return Mesh(np.array(jax.devices()[:count]), (DATA_AXIS,))


def data_size(mesh: Mesh | None) -> int:
    return 1 if mesh is None else int(mesh.shape[DATA_AXIS])


def check_batch_size(mesh: Mesh | None, batch_size: int, what: str = "batch_size") -> None:
    """The batch's rows split evenly over the data axis (padding rows included)."""
    if batch_size % data_size(mesh):
        raise ValueError(f"{what} {batch_size} does not split over the mesh's {data_size(mesh)} data devices: "
                         f"use a multiple of {data_size(mesh)}")


def replicate(mesh: Mesh | None, tree: Any) -> Any:
    """``tree`` with one copy on every device of the mesh (unchanged without a mesh)."""
    return tree if mesh is None else jax.device_put(tree, NamedSharding(mesh, P()))


def shard_batches(mesh: Mesh | None, batches: Iterable[dict]) -> Iterator[dict]:
    """Each batch with its rows split over the data axis (unchanged without a mesh)."""
    if mesh is None:
        yield from batches
        return
    rows = NamedSharding(mesh, P(DATA_AXIS))
    for batch in batches:
        yield jax.device_put(batch, rows)
