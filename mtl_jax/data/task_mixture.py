"""Multi-input MTL: each task (or group of tasks) with its own dataset, mixed into steps.

NLP-style multi-task learning trains sentiment on one corpus and topic on another: no example
carries both labels. :class:`TaskMixture` takes one dataset per task, or per group of tasks,
each a dict of arrays or a :class:`~mtl_jax.data.sources.RecordSource`, and makes every step's
batch from them::

    mixture = TaskMixture({"sentiment": reviews, "topic": news}, sampling="temperature", temperature=2.0)
    fit(model, tasks, mixture, ...)

Keys name the tasks' targets (a task's ``target``, its name by default); a tuple key gives one
dataset for several tasks. Every dataset holds the model's inputs under the same keys and shapes.

**A step's batch.** With ``sampling="all"`` each step reads one batch of ``batch_size`` rows from
every dataset and concatenates them (``D x batch_size`` rows: every task in every step, as
LibMTL's multi-input mode). Otherwise each step reads ``batch_size`` rows from one dataset,
chosen by

* ``"round_robin"``: the datasets in turn;
* ``"proportional"``: each dataset as often as it has batches (every example once per epoch);
* ``"temperature"``: dataset ``d`` with probability ``p_d ~ n_d^(1/tau)`` (Arivazhagan et al.
  2019; ``tau = 1`` is proportional, large ``tau`` tends to uniform, so small datasets are
  not drowned), its count per epoch rounded by largest remainders.

The datasets' rows keep their inputs and their own tasks' targets; every other task's target
is filled with zeros and masked out (``<target>_mask = 0``), so a task whose dataset is not in
the step is *absent*: loss 0, zero gradient, and every weighting and aggregation method leaves
it out of that step (see :mod:`mtl_jax.balancing`). Keys that are neither a target nor in every
dataset are dropped, so every step's batch has the same keys and shapes (nothing recompiles).

**Epochs and resume.** An epoch has ``sum_d ceil(n_d / B)`` steps (one dataset per step) or
``max_d ceil(n_d / B)`` (``"all"``). Which dataset a step reads is a pure function of ``(seed,
epoch, step)`` (round robin in a fixed order; proportional and temperature as a seeded shuffle of
the epoch's counts), and each dataset is read as an endless sequence of passes, pass ``p`` in
the order ``permutation(default_rng([seed, d, p]))``, the last batch of a pass padded and masked.
A dataset's position at ``(epoch, step)`` is therefore computed, not replayed: a run resumed
mid-epoch reads exactly the batches of an uninterrupted one.

**Evaluation** (``seed=None``, as :func:`~mtl_jax.train.loop.evaluate` reads data): every
dataset once, in order, in batches of its own rows: each task's metrics are over its own
dataset.

References: N. Arivazhagan et al. "Massively Multilingual Neural Machine Translation in the
Wild: Findings and Challenges", arXiv:1907.05019, 2019 (temperature sampling). X. Liu, P. He,
W. Chen, J. Gao. "Multi-Task Deep Neural Networks for Natural Language Understanding", ACL 2019
(one task's batch per step, proportional to size).
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import numpy as np

from mtl_jax.data.sources import head, is_record_source, num_examples, read, subset
from mtl_jax.tasks import EXAMPLE_MASK_KEY

SAMPLINGS = ("all", "round_robin", "proportional", "temperature")


def mask_key(target: str) -> str:
    return f"{target}_mask"


class TaskMixture:
    """One dataset per task or group of tasks (see the module doc)."""

    def __init__(self, datasets: Mapping[str | tuple[str, ...], Any], sampling: str = "proportional",
                 temperature: float = 2.0):
        if not isinstance(datasets, Mapping) or not datasets:
            raise ValueError("TaskMixture needs a dict {task target (or tuple of targets): dataset}, got "
                             f"{type(datasets).__name__}")
        if sampling not in SAMPLINGS:
            raise ValueError(f"unknown sampling {sampling!r}; expected one of {SAMPLINGS}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.sampling, self.temperature = sampling, float(temperature)
        self.groups: list[tuple[str, ...]] = []
        self.datasets: list[Any] = []
        owner: dict[str, int] = {}
        for key, data in datasets.items():
            targets = (key,) if isinstance(key, str) else tuple(key)
            if not targets or not all(isinstance(t, str) for t in targets):
                raise ValueError(f"TaskMixture: a key is a task target or a tuple of them, got {key!r}")
            for target in targets:
                if target in owner:
                    raise ValueError(f"TaskMixture: task {target!r} is given two datasets")
                owner[target] = len(self.groups)
            if not isinstance(data, Mapping) and not is_record_source(data):
                raise TypeError(f"TaskMixture: the dataset of {key!r} must be a dict of arrays or a RecordSource, "
                                f"got {type(data).__name__}")
            if num_examples(data) == 0:
                raise ValueError(f"TaskMixture: the dataset of {key!r} has no examples")
            self.groups.append(targets)
            self.datasets.append(data)
        self.targets = tuple(owner)
        self._sizes = [num_examples(d) for d in self.datasets]  # fixed: read once, not per batch
        self._layout = self._check_layout()

    def _check_layout(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """``{key: (shape of one row, dtype)}`` of every key a batch carries; refuses a dataset that
        lacks its own targets or whose shared keys disagree with the others'."""
        heads = [head(data, 1) for data in self.datasets]
        for targets, row in zip(self.groups, heads):
            missing = [t for t in targets if t not in row]
            if missing:
                raise KeyError(f"TaskMixture: the dataset of {targets} has no {missing} (its keys: {sorted(row)})")
        task_keys = set(self.targets) | {mask_key(t) for t in self.targets}
        shared = set.intersection(*[set(row) - task_keys for row in heads]) - {EXAMPLE_MASK_KEY}
        if not shared:
            raise ValueError("TaskMixture: the datasets share no input key (each must hold the model's inputs "
                             f"under the same key; their keys: {[sorted(row) for row in heads]})")
        layout = {}
        for key in sorted(shared):
            kinds = {(np.shape(row[key])[1:], np.asarray(row[key]).dtype) for row in heads}
            if len(kinds) > 1:
                seen = [(g, np.shape(r[key])[1:], str(np.asarray(r[key]).dtype)) for g, r in zip(self.groups, heads)]
                raise ValueError(f"TaskMixture: {key!r} differs between the datasets (shape per example, dtype): "
                                 f"{seen}")
            layout[key] = kinds.pop()
        for targets, row in zip(self.groups, heads):
            for target in targets:
                layout[target] = (np.shape(row[target])[1:], np.asarray(row[target]).dtype)
                own_mask = row.get(mask_key(target))  # a per-example or per-element mask of its own
                mask_shape = np.shape(own_mask)[1:] if own_mask is not None else ()
                layout[mask_key(target)] = (mask_shape, np.dtype(np.float32))
        return layout

    def with_sampling(self, sampling: str, temperature: float | None = None) -> "TaskMixture":
        """The same datasets mixed by another rule."""
        keys = [group[0] if len(group) == 1 else group for group in self.groups]
        return TaskMixture(dict(zip(keys, self.datasets)), sampling,
                           self.temperature if temperature is None else temperature)

    # -- sizes and the schedule ---------------------------------------------------------------

    def sizes(self) -> list[int]:
        return list(self._sizes)

    def passes(self, batch_size: int) -> list[int]:
        """Batches in one pass over each dataset."""
        return [math.ceil(n / batch_size) for n in self.sizes()]

    def steps(self, batch_size: int) -> int:
        passes = self.passes(batch_size)
        return max(passes) if self.sampling == "all" else sum(passes)

    def counts(self, batch_size: int) -> np.ndarray:
        """Batches read from each dataset per epoch."""
        steps, passes = self.steps(batch_size), np.asarray(self.passes(batch_size))
        if self.sampling == "all":
            return np.full(len(passes), steps)
        if self.sampling == "proportional":
            return passes
        if self.sampling == "round_robin":
            return np.asarray([steps // len(passes) + (d < steps % len(passes)) for d in range(len(passes))])
        weights = np.asarray(self.sizes(), np.float64) ** (1.0 / self.temperature)
        share = steps * weights / weights.sum()
        counts = np.floor(share).astype(np.int64)
        counts[np.argsort(-(share - counts), kind="stable")[:steps - counts.sum()]] += 1  # largest remainders
        return counts

    def schedule(self, batch_size: int, seed: int, epoch: int) -> np.ndarray:
        """The dataset each step of ``epoch`` reads (one-dataset sampling)."""
        counts = self.counts(batch_size)
        if self.sampling == "round_robin":
            return np.arange(self.steps(batch_size)) % len(counts)
        order = np.repeat(np.arange(len(counts)), counts)
        return np.random.default_rng([seed, epoch, len(counts), 1]).permutation(order)

    # -- reading ------------------------------------------------------------------------------

    def _conform(self, group: int, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch with every key of the layout: other tasks' targets zero and masked out."""
        rows = len(batch[EXAMPLE_MASK_KEY])
        own = set(self.groups[group]) | {mask_key(t) for t in self.groups[group]}
        others = {k for t in self.targets if t not in self.groups[group] for k in (t, mask_key(t))}
        out = {}
        for key, (shape, dtype) in self._layout.items():
            if key in others:  # another dataset's task (even where this dataset has such a key): masked out
                out[key] = np.zeros((rows,) + shape, dtype)
            elif key in batch:
                out[key] = np.asarray(batch[key], dtype)
            elif key in own:  # this dataset labels its own tasks
                out[key] = np.ones((rows,) + shape, dtype)
            else:
                raise KeyError(f"TaskMixture: a batch of {self.groups[group]} has no {key!r}")
        out[EXAMPLE_MASK_KEY] = np.asarray(batch[EXAMPLE_MASK_KEY], np.float32)
        return out

    def _batch(self, group: int, order: np.ndarray, position: int, batch_size: int,
               rows: slice = slice(None)) -> dict[str, np.ndarray]:
        chosen = order[position * batch_size:(position + 1) * batch_size]
        valid = np.ones(batch_size, np.float32)
        if len(chosen) < batch_size:  # the pass's last batch: padded with masked copies
            valid[len(chosen):] = 0.0
            chosen = np.concatenate([chosen, np.full(batch_size - len(chosen), chosen[0])])
        batch = read(self.datasets[group], chosen[rows])
        batch[EXAMPLE_MASK_KEY] = valid[rows]
        return self._conform(group, batch)

    def _read(self, group: int, k: int, batch_size: int, seed: int, rows: slice = slice(None)) -> dict[str, np.ndarray]:
        """Dataset ``group``'s ``k``-th batch since the start of training (its ``rows``)."""
        per_pass = self.passes(batch_size)[group]
        pass_, position = divmod(k, per_pass)
        n = self._sizes[group]
        order = np.random.default_rng([seed, group, pass_]).permutation(n)
        return self._batch(group, order, position, batch_size, rows)

    def batches(self, batch_size: int, *, seed: int | None, epoch: int = 0, start_step: int = 0,
                shard: tuple[int, int] = (0, 1)) -> Iterator[dict]:
        """The batches of ``epoch`` from ``start_step`` on (training), or every dataset once in
        order (``seed`` None: evaluation).

        ``shard=(i, n)``: process ``i`` of ``n`` reads rows ``[i*B/n, (i+1)*B/n)`` of each
        dataset's batch of ``B`` rows, and only those; with ``sampling="all"`` its part of a step is
        those rows of every dataset, concatenated, so the ``n`` parts in process order are the
        step's batch with its rows permuted (the same loss, gradient and metrics).
        """
        index, count = shard
        if count > 1 and seed is None:
            raise ValueError("evaluation batches of a TaskMixture are not sharded")
        if batch_size % count:
            raise ValueError(f"batch_size {batch_size} does not split into {count} equal shards")
        rows = slice(index * batch_size // count, (index + 1) * batch_size // count)
        if seed is None:
            for group, data in enumerate(self.datasets):
                order = np.arange(num_examples(data))
                for position in range(math.ceil(len(order) / batch_size)):
                    yield self._batch(group, order, position, batch_size)
            return
        steps, counts = self.steps(batch_size), self.counts(batch_size)
        if self.sampling == "all":
            for step in range(start_step, steps):
                parts = [self._read(g, epoch * steps + step, batch_size, seed, rows) for g in range(len(self.datasets))]
                yield {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
            return
        schedule = self.schedule(batch_size, seed, epoch)
        read_before = epoch * counts + np.bincount(schedule[:start_step], minlength=len(counts))
        for step in range(start_step, steps):
            group = int(schedule[step])
            yield self._read(group, int(read_before[group]), batch_size, seed, rows)
            read_before[group] += 1

    def first_batch(self, batch_size: int) -> dict[str, np.ndarray]:
        """A batch of the shape every training step has (for compiling and checks)."""
        return next(self.batches(batch_size, seed=0))

    def __repr__(self) -> str:
        parts = ", ".join(f"{'+'.join(g)}: {n} examples" for g, n in zip(self.groups, self.sizes()))
        return f"TaskMixture({parts}; sampling={self.sampling!r})"


def split_by_task(data, groups: list[tuple[str, ...]], shares: list[float], seed: int) -> dict:
    """``{group: its part of data}``: the examples of ``data`` dealt into disjoint parts in
    proportion to ``shares`` (a seeded permutation, then consecutive runs), one per group of
    targets; each part then labels only its group's tasks (a :class:`TaskMixture` masks the
    rest). Multi-input training made from one labelled dataset, e.g. to compare samplings when
    one task has ten times another's data."""
    if len(shares) != len(groups) or not all(math.isfinite(s) and s > 0 for s in shares):
        raise ValueError(f"split_by_task: one share > 0 per group, got {shares} for {groups}")
    n = num_examples(data)
    bounds = np.floor(np.cumsum([0.0] + list(shares)) / sum(shares) * n + 0.5).astype(np.int64)
    if (np.diff(bounds) == 0).any():
        raise ValueError(f"split_by_task: {n} examples leave a group without any (shares {shares})")
    order = np.random.default_rng([seed, n, 2]).permutation(n)
    return {group: subset(data, np.sort(order[start:end]))
            for group, start, end in zip(groups, bounds[:-1], bounds[1:])}


def is_mixture(data: Any) -> bool:
    return isinstance(data, TaskMixture)
