"""``dataset = "arrays"``: your own arrays, trained from the CLI without writing a dataset module.

Each split is a ``.npz`` file, or a folder of ``.npy`` files named after their keys
(``train/x.npy``, ``train/price.npy``...); every array of a split has one row per example. The
config names the files, the input's key, and per task its kind and the key of its target::

    config.dataset = "arrays"
    config.data = {"train": "data/mine/train.npz", "validation": "data/mine/validation.npz",
                   "test": "data/mine/test.npz", "input_key": "x"}
    config.tasks = {"price": {"kind": "regression"},
                    "grade": {"kind": "classification", "num_classes": 3, "weight": 0.5, "target": "y_grade"}}

A task's ``kind`` is one of ``regression`` (``dim``), ``classification`` (``num_classes``),
``binary``, ``multilabel`` (``num_labels``), ``segmentation`` (``num_classes``) or ``depth``;
the other entries go to :mod:`mtl_jax.tasks`' constructor of that kind (``weight``, ``metrics``,
``loss`` for regression, ``target``: the array's key when it is not the task's name).
``validation`` and ``test`` may be left out (no validation during training, no test metrics).
Files are checked when read (a missing file or key is named, with the keys the file holds and
the closest ones), and the arrays then like every other dataset (shapes, dtypes, label ranges).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from mtl_jax import tasks as tasks_lib
from mtl_jax.names import did_you_mean

KINDS = {"regression": tasks_lib.regression, "classification": tasks_lib.classification,
         "binary": tasks_lib.binary, "multilabel": tasks_lib.multilabel,
         "segmentation": tasks_lib.segmentation, "depth": tasks_lib.depth}
SPLITS = ("train", "validation", "test")


def read_arrays(path: str | Path, split: str) -> dict[str, np.ndarray]:
    """The arrays of one split: a ``.npz`` file, or a folder of ``<key>.npy`` files."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"data.{split}: {str(path)!r} does not exist (a .npz file or a folder of .npy files)")
    if path.is_dir():
        files = sorted(path.glob("*.npy"))
        if not files:
            raise FileNotFoundError(f"data.{split}: the folder {str(path)!r} holds no .npy files")
        arrays = {f.stem: np.load(f, allow_pickle=False) for f in files}
    else:
        try:
            loaded = np.load(path, allow_pickle=False)
            if not hasattr(loaded, "files"):
                raise ValueError("it holds a single array")
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
        except ValueError as error:
            raise ValueError(f"data.{split}: {str(path)!r} is not a .npz of named arrays ({error}); save one with "
                             "np.savez(path, x=inputs, price=..., ...) or give a folder of .npy files") from None
    sizes = {key: (len(value) if value.ndim else None) for key, value in arrays.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"data.{split}: the arrays of {str(path)!r} must have one row per example, got rows {sizes}")
    return arrays


def load_arrays(train: str, validation: str = "", test: str = "", input_key: str = "x",
                data_dir: str | Path | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``{split: arrays}`` for the splits given (``data_dir`` is not used: paths are as written,
    relative to the working directory)."""
    del data_dir
    data = {}
    for split, path in zip(SPLITS, (train, validation, test)):
        if not path:
            continue
        arrays = read_arrays(path, split)
        if input_key not in arrays:
            raise KeyError(f"data.{split}: {str(path)!r} has no input array {input_key!r}"
                           f"{did_you_mean(input_key, arrays)} (it holds {sorted(arrays)}); set data.input_key")
        data[split] = arrays
    if "train" not in data:
        raise ValueError("data.train: the path of the training arrays is required")
    return data


def make_task(name: str, options: Mapping[str, Any]) -> tasks_lib.Task:
    """The task ``options`` describe: ``kind`` and that kind's constructor arguments."""
    options = dict(options or {})
    kind = options.pop("kind", None)
    if kind is None:
        raise ValueError(f"task {name!r} needs a 'kind' (dataset 'arrays' learns each task's kind from the config): "
                         f"one of {sorted(KINDS)}")
    if kind not in KINDS:
        raise ValueError(f"task {name!r}: unknown kind {kind!r}{did_you_mean(str(kind), KINDS)} "
                         f"(one of {sorted(KINDS)})")
    if "metrics" in options:
        options["metrics"] = tuple(options["metrics"])
    try:
        return KINDS[kind](name, **options)
    except TypeError as error:
        raise ValueError(f"task {name!r} ({kind}): bad options {sorted(options)} ({error})") from None
