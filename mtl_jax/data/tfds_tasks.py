"""Any TensorFlow Datasets dataset as a multi-task problem: its features mapped to tasks.

A :class:`FeatureTask` reads one task's target from one feature of a TFDS example (nested
features by their path, ``"attributes/Smiling"``), optionally through a function (a recipe's
derived target, e.g. ``grade > 0``). Its kind and number of classes are taken from the feature
when not given: a ``ClassLabel`` is a classification (its ``num_classes`` and class names), a
``bool`` scalar a binary task, a float scalar a regression, a float ``[H, W]`` map a depth
task; an integer scalar or an ``[H, W, 1]`` label image needs ``kind`` (and ``num_classes``).

:func:`load_tfds` prepares the dataset in TFDS's ``array_record`` format once (downloading it
the first time, as TFDS does; ``download=False`` refuses instead) and streams each split as a
:class:`~mtl_jax.data.sources.RecordSource` through a per-example transform:

* the input image is resized to ``image_size`` (bilinear; ``None`` keeps it, which needs
  images of one size), scaled to ``[0, 1]`` and standardised per channel;
* regression (and depth) targets are standardised, so that every task's MSE starts near 1 and
  no task dominates the total by its units alone (metrics are then in units of the training
  split's std, as the dataset's description says);
* label images (segmentation) are resized with the nearest label, never blended.

The means and standard deviations are computed once on the train split
(:mod:`mtl_jax.data.statistics`: a fixed subset of at most ``statistics_examples``) and stored
as JSON beside the prepared data, under ``<data_dir>/mtl_jax_statistics/<name>/<version>/``.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from mtl_jax.names import did_you_mean

SPLITS = ("train", "validation", "test")
STANDARDISED_KINDS = ("regression", "depth")


@dataclasses.dataclass(frozen=True)
class FeatureTask:
    """Where a task's target comes from.

    Attributes:
      feature: the feature's path in an example (``"label"``, ``"attributes/Smiling"``).
      kind: the task's kind (:mod:`mtl_jax.tasks`); ``None``: taken from the feature.
      num_classes: classes of a classification or segmentation; ``None``: from a ``ClassLabel``.
      derive: optional ``fn(value) -> target`` (e.g. ``lambda grade: grade > 0``); with it,
        ``kind`` must be given.
    """

    feature: str
    kind: str | None = None
    num_classes: int | None = None
    derive: Callable[[np.ndarray], Any] | None = None


@dataclasses.dataclass(frozen=True)
class ResolvedTask:
    kind: str
    num_classes: int | None
    class_names: tuple[str, ...] | None


def flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}`` (TFDS features or examples)."""
    flat = {}
    for key in tree.keys():
        value = tree[key]
        path = f"{prefix}{key}"
        if _is_mapping(value):
            flat.update(flatten(value, f"{path}/"))
        else:
            flat[path] = value
    return flat


def _is_mapping(value) -> bool:
    import tensorflow_datasets as tfds

    return isinstance(value, (Mapping, tfds.features.FeaturesDict))


def resolve(task_name: str, feature_task: FeatureTask, features: Mapping[str, Any]) -> ResolvedTask:
    """The task's kind, classes and class names, checked against the dataset's features."""
    import tensorflow_datasets as tfds

    if feature_task.feature not in features:
        raise KeyError(f"task {task_name!r}: the dataset has no feature {feature_task.feature!r}"
                       f"{did_you_mean(feature_task.feature, features)} (features: {', '.join(sorted(features))})")
    feature = features[feature_task.feature]
    kind, classes = feature_task.kind, feature_task.num_classes
    names = tuple(feature.names) if isinstance(feature, tfds.features.ClassLabel) else None
    if feature_task.derive is not None:
        if kind is None:
            raise ValueError(f"task {task_name!r}: a derived target needs its kind")
        return ResolvedTask(kind, classes, None)
    shape, dtype = tuple(feature.shape), np.dtype(feature.np_dtype)
    if kind is None:
        if isinstance(feature, tfds.features.ClassLabel):
            kind = "classification"
        elif shape == () and dtype == np.bool_:
            kind = "binary"
        elif shape == () and np.issubdtype(dtype, np.floating):
            kind = "regression"
        elif len(shape) == 2 and np.issubdtype(dtype, np.floating):
            kind = "depth"
        else:
            raise ValueError(f"task {task_name!r}: the kind of feature {feature_task.feature!r} "
                             f"({type(feature).__name__}, shape {shape}, {dtype}) is not known from the feature; "
                             "give 'kind' (and "
                             "'num_classes' for classes)")
    if kind in ("classification", "segmentation") and classes is None:
        if names is None:
            raise ValueError(f"task {task_name!r} ({kind}): give 'num_classes' (feature {feature_task.feature!r} "
                             "is not a ClassLabel)")
        classes = len(names)
    if names is not None and classes is not None and classes != len(names):
        raise ValueError(f"task {task_name!r}: num_classes={classes} but the feature {feature_task.feature!r} has "
                         f"{len(names)} classes")
    return ResolvedTask(kind, classes, names)


def tfds_features(name: str, data_dir: str | Path | None = None, builder_config=None) -> dict[str, Any]:
    """The flattened features of TFDS dataset ``name`` (from its builder's code or prepared
    metadata; nothing is downloaded), with a custom ``builder_config`` if given. An unknown name
    is named with the closest TFDS names."""
    import tensorflow_datasets as tfds

    from mtl_jax.data.generated import default_data_dir, quiet_absl

    with quiet_absl():
        try:
            builder = tfds.builder(name, data_dir=str(data_dir or default_data_dir()),
                                   **({"config": builder_config} if builder_config is not None else {}))
        except tfds.core.registered.DatasetNotFoundError:
            known = tfds.list_builders(with_community_datasets=False)
            raise KeyError(f"data.name: TFDS has no dataset {name.split('/')[0]!r}"
                           f"{did_you_mean(name.split('/')[0], known)}") from None
    return flatten(builder.info.features)


def resize_image(image: np.ndarray, size: tuple[int, int] | None, *, labels: bool = False) -> np.ndarray:
    """``[H, W, C]`` (or ``[H, W]``) to ``size`` (bilinear; nearest for ``labels``); unchanged when
    ``size`` is ``None`` or already the image's."""
    image = np.asarray(image)
    if size is None or tuple(image.shape[:2]) == tuple(size):
        return image
    from PIL import Image

    resample = Image.NEAREST if labels else Image.BILINEAR
    height, width = size
    if image.ndim == 3 and image.shape[-1] != 1 and image.shape[-1] != 3:
        return np.stack([resize_image(image[..., c], size, labels=labels) for c in range(image.shape[-1])], -1)
    squeezed = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    if squeezed.dtype == np.float16:
        squeezed = squeezed.astype(np.float32)
    resized = np.asarray(Image.fromarray(squeezed).resize((width, height), resample))
    return resized[..., None] if image.ndim == 3 and image.shape[-1] == 1 else resized


def resize_map(values: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """A float map with missing (NaN) pixels resized bilinearly as a normalised convolution: each
    output pixel is the weighted mean of the valid pixels under it, and missing where they are
    less than half of its footprint (a plain resize spreads every NaN over its neighbours)."""
    values = np.asarray(values, np.float32)
    valid = ~np.isnan(values)
    if valid.all():
        return resize_image(values, size)
    total = resize_image(np.where(valid, values, 0.0).astype(np.float32), size)
    weight = resize_image(valid.astype(np.float32), size)
    return np.where(weight >= 0.5, total / np.maximum(weight, 1e-6), np.nan).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Transform:
    """One TFDS example -> ``{input_key: float32 image, task: target}`` (picklable, deterministic)."""

    input_feature: str
    input_key: str
    image_size: tuple[int, int] | None
    tasks: Mapping[str, tuple[FeatureTask, ResolvedTask]]
    statistics: Mapping[str, Mapping] | None = None  # None: raw values (to compute the statistics)

    def __call__(self, example: Mapping) -> dict[str, np.ndarray]:
        from mtl_jax.data.statistics import normalise

        flat = flatten(example)
        image = resize_image(flat[self.input_feature], self.image_size)
        if image.ndim == 2:
            image = image[..., None]
        image = image.astype(np.float32) / (255.0 if np.issubdtype(image.dtype, np.integer) else 1.0)
        out = {self.input_key: image}
        for name, (feature_task, resolved) in self.tasks.items():
            value = np.asarray(flat[feature_task.feature])
            if feature_task.derive is not None:
                value = np.asarray(feature_task.derive(value))
            kind = resolved.kind
            if kind == "segmentation":
                value = resize_image(value, self.image_size, labels=True)
                value = (value[..., 0] if value.ndim == 3 else value).astype(np.int32)
            elif kind == "depth":
                value = resize_map(value, self.image_size)
            elif kind == "classification":
                value = value.astype(np.int32)
            elif kind in ("binary", "multilabel"):
                value = value.astype(np.float32)
            else:
                value = value.astype(np.float32)
            out[name] = value
        if self.statistics is not None:
            out = {key: normalise(value, self.statistics[key]) if key in self.statistics else value
                   for key, value in out.items()}
        return out


def tfds_sources(name: str, splits: Mapping[str, str], data_dir: str | Path | None, download: bool,
                 builder_config=None) -> dict:
    """``{split: TFDS data source}`` (random access) of dataset ``name`` for the TFDS split specs
    given (``"train[:80%]"``), prepared as array_record under ``data_dir`` once; ``builder_config``:
    a custom TFDS builder config (e.g. Cityscapes with both segmentation and disparity)."""
    import tensorflow_datasets as tfds

    from mtl_jax.data.generated import default_data_dir, quiet_absl

    data_dir = str(data_dir or default_data_dir())
    with quiet_absl():
        try:
            return {split: tfds.data_source(name, split=spec, data_dir=data_dir, download=download,
                                            builder_kwargs={"file_format": "array_record",
                                                            **({"config": builder_config} if builder_config else {})})
                    for split, spec in splits.items()}
        except AssertionError as error:  # TFDS asserts when download=False finds nothing prepared
            raise FileNotFoundError(f"tfds dataset {name!r} is not prepared under {data_dir} and data.download is "
                                    f"False ({error})") from None


def load_tfds(name: str, *, tasks: Mapping[str, FeatureTask], input: str = "image", train_split: str = "train",
              validation_split: str = "validation", test_split: str = "test",
              image_size: tuple[int, int] | None = None, download: bool = True, in_memory: bool = False,
              statistics_examples: int = 20_000, threads: int = 1, builder_config=None,
              data_dir: str | Path | None = None) -> dict[str, Any]:
    """``{split: dataset}`` of TFDS dataset ``name`` with ``tasks`` read from its features (see the
    module doc). A split left empty (``validation_split=""``) is not loaded. ``in_memory=True``
    reads each split into numpy arrays (small datasets only). ``builder_config``: a function
    returning a custom TFDS builder config (called here, so that recipes import no TFDS)."""
    import tensorflow_datasets as tfds

    from mtl_jax.data.generated import default_data_dir, quiet_absl
    from mtl_jax.data.sources import RecordSource, head
    from mtl_jax.data.statistics import cached_statistics, compute_statistics

    data_dir = str(data_dir or default_data_dir())
    image_size = None if image_size is None else tuple(int(s) for s in image_size)
    config = builder_config() if callable(builder_config) else builder_config
    with quiet_absl():
        builder = tfds.builder(name, data_dir=data_dir, **({"config": config} if config is not None else {}))
    features = tfds_features(name, data_dir, config)
    if input not in features:
        raise KeyError(f"data.input: {name} has no feature {input!r}{did_you_mean(input, features)} "
                       f"(features: {', '.join(sorted(features))})")
    resolved = {task: (feature_task, resolve(task, feature_task, features)) for task, feature_task in tasks.items()}
    split_specs = {split: spec for split, spec in zip(SPLITS, (train_split, validation_split, test_split)) if spec}
    if "train" not in split_specs:
        raise ValueError("data.train_split is required")
    sources = tfds_sources(name, split_specs, data_dir, download, config)
    input_key = input.replace("/", "_")
    raw = Transform(input, input_key, image_size, resolved)
    standardised = [input_key] + [task for task, (_, r) in resolved.items() if r.kind in STANDARDISED_KINDS]
    request = {"dataset": name, "config": builder.builder_config.name if builder.builder_config else None,
               "version": str(builder.version), "split": split_specs["train"], "input": input,
               "image_size": image_size, "keys": standardised,
               "targets": {t: [f.feature, f.kind, _name_of(f.derive)] for t, (f, _) in resolved.items()
                           if t in standardised},
               "max_examples": statistics_examples, "examples": len(sources["train"])}
    train = RecordSource(sources["train"], transform=raw, threads=0)
    statistics = cached_statistics(
        Path(data_dir) / "mtl_jax_statistics" / name / str(builder.version), request,
        lambda: compute_statistics(train.read, len(train), standardised, max_examples=statistics_examples))
    transform = dataclasses.replace(raw, statistics=statistics)
    data = {split: RecordSource(source, transform=transform, threads=threads) for split, source in sources.items()}
    return {split: head(source, len(source)) for split, source in data.items()} if in_memory else data


def _name_of(function) -> str | None:
    """A stable name for a derive function (its repr holds a memory address)."""
    if function is None:
        return None
    return f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', type(function).__name__)}"


def class_names(tasks: Mapping[str, tuple[FeatureTask, ResolvedTask]]) -> dict[str, tuple[str, ...]]:
    return {task: r.class_names for task, (_, r) in tasks.items() if r.class_names}


def task_constructor(resolved: ResolvedTask) -> Callable:
    """``fn(name, **overrides) -> Task`` of the resolved kind."""
    from mtl_jax.data.arrays import KINDS

    make = KINDS[resolved.kind]
    if resolved.kind in ("classification", "segmentation"):
        return functools.partial(make, num_classes=resolved.num_classes)
    return make
