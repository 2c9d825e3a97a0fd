"""Checks of user input on the host, before anything is compiled or written.

Each check raises ``ValueError`` (or ``KeyError`` for a missing key) naming the task,
the key, and what was expected against what was seen.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Sequence

import flax
import flax.linen as nn
import jax
import numpy as np

from mtl_jax.models.mixed_precision import unwrap
from mtl_jax.tasks import EXAMPLE_MASK_KEY, Task

InputKey = str | tuple[str, ...]


def check_tasks(model, tasks: Sequence[Task]) -> None:
    """Task names are unique and the model has a head for each of them."""
    names = [t.name for t in tasks]
    if not names:
        raise ValueError("no tasks given")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"task names must be unique; repeated: {duplicates}")
    heads = getattr(model, "task_names", None)
    if heads is not None:
        unknown = [n for n in names if n not in heads]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}: the model has heads only for {list(heads)}")


def _input_keys(input_key: InputKey) -> tuple[str, ...]:
    return (input_key,) if isinstance(input_key, str) else tuple(input_key)


def check_count(name: str, value: Any, minimum: int = 0) -> int:
    """``value`` as an int, refusing floats, bools and strings (``epochs=1.5`` is a mistake, not 2
    epochs) and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_numeric(name: str, array: np.ndarray, where: str = "data") -> None:
    """Arrays the model or a loss reads must hold numbers, not strings or Python objects."""
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"{where}: {name!r} holds {array.dtype} values ({array.dtype.kind!r} kind); "
                         "convert it to a numeric array (float or integer) first")


def check_inputs(arrays: Mapping[str, Any], input_key: InputKey, where: str = "data") -> None:
    """The input keys are present, numeric, and finite where floating-point."""
    for key in _input_keys(input_key):
        if key not in arrays:
            raise KeyError(f"{where}: input key {key!r} missing; keys seen: {sorted(arrays)}")
        x = np.asarray(arrays[key])
        check_numeric(f"input {key}", x, where)
        if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
            raise ValueError(f"{where}: input {key!r} has non-finite values in {bad} example(s)")


def _expected_target_shape(task: Task, target: np.ndarray) -> str | None:
    """A description of the expected shape if ``target`` does not fit ``task``, else None."""
    n = target.shape[0]
    if task.kind == "regression":
        ok = target.shape == (n, task.output_dim) or (task.output_dim == 1 and target.shape == (n,))
        return None if ok else f"(N,{' ' + str(task.output_dim) if task.output_dim > 1 else ''})"
    if task.kind in ("classification", "binary"):
        return None if target.ndim == 1 else "(N,)"
    if task.kind == "multilabel":
        return None if target.shape == (n, task.output_dim) else f"(N, {task.output_dim})"
    return None if target.ndim == 3 else "(N, H, W)"


def check_targets(tasks: Sequence[Task], arrays: Mapping[str, Any], where: str = "data") -> None:
    """Every task's target is present, has the right shape, dtype and label range."""
    for task in tasks:
        key = task.target_key
        if key not in arrays:
            raise KeyError(f"{where}: task {task.name!r} needs target key {key!r}, which is missing; "
                           f"keys seen: {sorted(k for k in arrays if k != EXAMPLE_MASK_KEY)}")
        target = np.asarray(arrays[key])
        check_numeric(f"target {key}", target, where)
        expected = _expected_target_shape(task, target)
        if expected is not None:
            raise ValueError(f"{where}: task {task.name!r} ({task.kind}) expects target {key!r} of shape "
                             f"{expected}, got {target.shape}")
        if task.integer_labels:
            if not np.issubdtype(target.dtype, np.integer):
                raise ValueError(f"{where}: task {task.name!r} needs integer labels in {key!r} (-1 for missing), "
                                 f"got dtype {target.dtype}")
            bad = (target < -1) | (target >= task.output_dim)
            if bad.any():
                raise ValueError(f"{where}: task {task.name!r}: {int(bad.sum())} label(s) in {key!r} outside "
                                 f"[0, {task.output_dim}) (or -1 for missing), e.g. {target[bad].flat[0]}")
        elif task.kind in ("binary", "multilabel"):
            values = target[np.isfinite(target) & (target >= 0)] if np.issubdtype(target.dtype, np.floating) \
                else target[target >= 0]
            if not np.isin(values, (0, 1)).all():
                raise ValueError(f"{where}: task {task.name!r}: labels in {key!r} must be 0 or 1 "
                                 f"(NaN or -1 for missing), got e.g. {values[~np.isin(values, (0, 1))].flat[0]}")
        elif np.isinf(target.astype(np.float64)).any():
            raise ValueError(f"{where}: task {task.name!r}: target {key!r} has infinite values (use NaN for missing)")
        if task.mask_key in arrays:
            mask = np.asarray(arrays[task.mask_key])
            if mask.shape != target.shape[: mask.ndim]:
                raise ValueError(f"{where}: mask {task.mask_key!r} has shape {mask.shape}, which does not prefix "
                                 f"target {key!r} of shape {target.shape}")


def check_data(tasks: Sequence[Task], arrays: Mapping[str, Any], input_key: InputKey, where: str = "data") -> None:
    """All checks of a dataset (dict of arrays) against the tasks and the input key."""
    from mtl_jax.data.sources import num_examples

    if num_examples(arrays) == 0:
        raise ValueError(f"{where}: the dataset has no examples")
    check_inputs(arrays, input_key, where)
    check_targets(tasks, arrays, where)


# Examples of a record source checked before anything is compiled; the rest batch by batch.
SOURCE_CHECK_EXAMPLES = 64


def dataset_checks(model, tasks: Sequence[Task], data, input_key: InputKey,
                   where: str = "data") -> Callable[[Mapping[str, Any]], None] | None:
    """Checks ``data`` against the tasks, the input key and the model's embedding tables.

    In-memory arrays are checked whole (returns None). A record source or an iterable of batches
    is never read whole to check it: its first examples (first batch) are checked now and the
    returned function checks each batch as it is read (pass it to
    :func:`~mtl_jax.data.batching.batches`), naming the batch's examples' problem the same way.
    """
    from mtl_jax.data.batch_streams import is_batch_stream
    from mtl_jax.data.batching import select_inputs
    from mtl_jax.data.sources import head, is_record_source, num_examples
    from mtl_jax.data.task_mixture import is_mixture

    if not is_record_source(data) and not is_batch_stream(data) and not is_mixture(data):
        check_data(tasks, data, input_key, where)
        check_id_ranges(model, select_inputs(data, input_key), f"{where} inputs")
        return None
    if is_record_source(data) and num_examples(data) == 0:
        raise ValueError(f"{where}: the dataset has no examples")

    def check(batch: Mapping[str, Any]) -> None:
        check_data(tasks, batch, input_key, where)
        check_id_ranges(model, select_inputs(batch, input_key), f"{where} inputs")

    check(data.first if is_batch_stream(data) else head(data, SOURCE_CHECK_EXAMPLES))
    return check


def _submodules(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` and every module among its fields, recursively (heads, trunks, encoders...)."""
    yield module
    for field in dataclasses.fields(module):
        if field.name in ("parent", "name"):
            continue
        value = getattr(module, field.name, None)
        values = value.values() if isinstance(value, Mapping) else value if isinstance(value, (tuple, list)) else [value]
        for child in values:
            if isinstance(child, nn.Module):
                yield from _submodules(child)


def check_id_ranges(model, inputs, where: str = "inputs") -> None:
    """Integer ids fit the model's embedding tables (``vocab_sizes`` per field of a
    :class:`~mtl_jax.models.trunks.FieldEmbedding`, ``vocab_size`` of a text encoder): an
    out-of-range id would otherwise read NaN and surface as a non-finite loss."""
    model = unwrap(model)
    if not isinstance(model, nn.Module) or isinstance(inputs, Mapping):
        return
    ids = np.asarray(inputs)
    if not np.issubdtype(ids.dtype, np.integer) or ids.size == 0:
        return
    for module in _submodules(model):
        sizes = getattr(module, "vocab_sizes", None)
        if sizes is not None and ids.ndim == 2 and ids.shape[1] == len(sizes):
            bad = (ids < 0) | (ids >= np.asarray(sizes))
            if bad.any():
                field = int(np.argmax(bad.any(axis=0)))
                column = ids[:, field]
                raise ValueError(f"{where}: categorical field {field} has ids in [{column.min()}, {column.max()}] but "
                                 f"its embedding table has {sizes[field]} rows (ids must be in [0, {sizes[field]}))")
        size = getattr(module, "vocab_size", None)
        if isinstance(size, int) and (ids.min() < 0 or ids.max() >= size):
            raise ValueError(f"{where}: token ids in [{ids.min()}, {ids.max()}] do not fit the vocabulary of {size} "
                             "(ids must be in [0, vocab_size))")


def check_input_shape(model, params, inputs, where: str = "inputs") -> None:
    """The model with these parameters accepts inputs of this shape (checked abstractly, nothing
    runs), and integer ids fit its embedding tables."""
    check_id_ranges(model, inputs, where)
    example = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1,) + np.shape(x)[1:], np.asarray(x).dtype), inputs)
    try:
        jax.eval_shape(lambda p, x: model.apply({"params": p}, x), params, example)
    except (flax.errors.ScopeParamShapeError, TypeError, ValueError) as error:
        raise ValueError(input_mismatch(model, inputs, where, error, "the model's parameters")) from None


def check_model_takes(model, inputs, where: str = "inputs") -> None:
    """The model can be initialised on inputs of this shape (abstractly: nothing runs)."""
    example = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1,) + np.shape(x)[1:], np.asarray(x).dtype), inputs)
    try:
        jax.eval_shape(lambda x: model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(0)}, x,
                                            train=False), example)
    except (TypeError, ValueError, flax.errors.FlaxError) as error:
        raise ValueError(input_mismatch(model, inputs, where, error)) from None


def expected_inputs(model) -> str | None:
    """What the model's trunk takes (its ``expects``, e.g. ``"(N, H, W, C) images"``), if it says."""
    return next((m.expects for m in _submodules(unwrap(model)) if isinstance(getattr(m, "expects", None), str)), None)


def input_mismatch(model, inputs, where: str, error: BaseException, what: str = "the model") -> str:
    """``train inputs of shape (N, 64, 64) (N examples) do not fit the model (it takes (N, H, W, C)
    images): <the first line of JAX's or Flax's error>``."""
    shapes = jax.tree.map(lambda x: "(" + ", ".join(["N", *map(str, np.shape(x)[1:])]) + ")", inputs)
    expected = expected_inputs(model)
    takes = f" (it takes {expected})" if expected else ""
    detail = str(error).split("(https://")[0].strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"{where} of shape {shapes} (N examples) do not fit {what}{takes}: {detail}"
