"""Datasets by name for configs: how to load each one and the tasks it offers.

A :class:`DatasetSpec` gives ``load(data_dir=..., **config.data) -> {"train", "validation",
"test"}`` (dicts of numpy arrays), the model's ``input_key``, and a constructor per task so
that a config picks tasks by name and overrides their ``weight``, ``loss`` or ``metrics``::

    config.tasks = {"price": {"weight": 1.0}, "kind": {"weight": 0.5}}

Tasks are ordered by name (a ``ConfigDict`` keeps its keys sorted), so a run's task order,
weight vectors and logs never depend on how a config file was written.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Mapping

from mtl_jax import tasks as tasks_lib
from mtl_jax.data import arrays, houses
from mtl_jax.data.clicks_builder import load_clicks
from mtl_jax.data.correlated_tasks import task_names as correlated_task_names
from mtl_jax.data.correlated_tasks_builder import load_correlated_tasks
from mtl_jax.data.digits import CLASSES as DIGIT_CLASSES
from mtl_jax.data.digits_builder import load_multi_digits
from mtl_jax.data.lesions import GRADES
from mtl_jax.data.lesions_builder import load_lesions
from mtl_jax.data.movielens import load_movielens
from mtl_jax.data.multi_mnist import load_multi_mnist
from mtl_jax.data.reviews import SENTIMENTS, TOPICS
from mtl_jax.data.reviews_builder import load_reviews
from mtl_jax.data.text_corpora import CORPORA as TEXT_CORPORA, INPUT_KEY as TEXT_INPUT_KEY, load_text_corpora
from mtl_jax.data.tfds_recipes import RECIPES
from mtl_jax.data.tfds_tasks import FeatureTask, ResolvedTask, load_tfds, resolve, task_constructor, tfds_features
from mtl_jax.data.houses_builder import load_houses
from mtl_jax.names import did_you_mean
from mtl_jax.registry import DATASETS
from mtl_jax.tasks import Task


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    load: Callable[..., dict[str, dict[str, Any]]]
    tasks: Mapping[str, Callable[..., Task]]
    input_key: str
    output_size: tuple[int, int] | None = None  # for dense (per-pixel) heads
    class_names: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)  # per task, by index

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuses loader options the loader does not take, naming the closest ones."""
        known = [name for name in inspect.signature(self.load).parameters if name != "data_dir"]
        for name in options:
            if name not in known:
                raise KeyError(f"unknown data option {name!r}{did_you_mean(name, known)} "
                               f"(this dataset's options: {', '.join(known)})")

    def configured(self, options: Mapping[str, Any], chosen: Mapping[str, Any] | None = None) -> "DatasetSpec":
        """This spec for a config's data ``options`` and chosen tasks (datasets whose tasks or input
        key come from the config, such as ``arrays`` and ``tfds``, override it)."""
        return self

    def make_tasks(self, chosen: Mapping[str, Mapping[str, Any]]) -> tuple[Task, ...]:
        """Tasks in the order given (configs: by name), each with its overrides (``weight``, ``loss``, ``metrics``)."""
        if not chosen:
            raise ValueError(f"no tasks chosen; this dataset offers {sorted(self.tasks)}")
        unknown = [name for name in chosen if name not in self.tasks]
        if unknown:
            hints = "".join(did_you_mean(name, self.tasks) for name in unknown)
            raise KeyError(f"unknown task(s) {unknown}{hints}; this dataset offers {sorted(self.tasks)}")
        made = []
        for name, overrides in chosen.items():
            overrides = dict(overrides or {})
            if "metrics" in overrides:
                overrides["metrics"] = tuple(overrides["metrics"])
            try:
                made.append(self.tasks[name](name, **overrides))
            except TypeError as error:
                raise ValueError(f"task {name!r}: bad options {sorted(overrides)} ({error})") from error
        return tuple(made)


HOUSES = DATASETS.register(
    "houses", "embedded procedural 64x64 houses: price, kind, storeys, roof_colour, windows, parts (per pixel)")(
    DatasetSpec(
        load=load_houses,
        tasks={"price": tasks_lib.regression,
               "windows": tasks_lib.regression,
               "kind": functools.partial(tasks_lib.classification, num_classes=len(houses.KINDS)),
               "storeys": functools.partial(tasks_lib.classification, num_classes=3),
               "roof_colour": functools.partial(tasks_lib.classification, num_classes=len(houses.ROOF_COLOURS)),
               "parts": functools.partial(tasks_lib.segmentation, num_classes=len(houses.PARTS))},
        input_key="image",
        output_size=(houses.SIZE, houses.SIZE),
        class_names={"kind": houses.KINDS, "storeys": ("one", "two", "three"), "roof_colour": houses.ROOF_COLOURS,
                     "parts": houses.PARTS}))

CLICKS = DATASETS.register(
    "clicks", "generated recommendation impressions: click, conversion (observed after a click), purchase; "
    "inputs: categorical fields for model='field_embedding'")(
    DatasetSpec(
        load=load_clicks,
        tasks={name: tasks_lib.binary for name in ("click", "conversion", "purchase")},
        input_key="fields"))


@dataclasses.dataclass(frozen=True)
class CorrelatedTasksSpec(DatasetSpec):
    """``correlated_tasks``: as many regression tasks as ``data.num_tasks`` says (default 8)."""

    def configured(self, options: Mapping[str, Any], chosen: Mapping[str, Any] | None = None) -> DatasetSpec:
        count = options.get("num_tasks", inspect.signature(self.load).parameters["num_tasks"].default)
        return dataclasses.replace(self, tasks={name: tasks_lib.regression for name in correlated_task_names(count)})


CORRELATED_TASKS = DATASETS.register(
    "correlated_tasks", "generated regression tasks t0..t{T-1} (data.num_tasks, default 8) of a vector x, in two "
    "groups correlated +rho within and -rho across (data.correlation): conflicting gradients (MMoE's synthetic "
    "data, generalised)")(
    CorrelatedTasksSpec(load=load_correlated_tasks, tasks={name: tasks_lib.regression
                                                           for name in correlated_task_names(8)}, input_key="x"))


MULTI_DIGITS = DATASETS.register(
    "multi_digits", "MultiMNIST-style 24x24 pairs of real handwritten digits (scikit-learn's, no download): "
    "left, right (10 classes each)")(
    DatasetSpec(
        load=load_multi_digits,
        tasks={name: functools.partial(tasks_lib.classification, num_classes=10) for name in ("left", "right")},
        input_key="image",
        class_names={"left": DIGIT_CLASSES, "right": DIGIT_CLASSES}))


REVIEWS = DATASETS.register(
    "reviews", "generated product reviews as token ids (NLP, for model='text_encoder'): sentiment (binary), "
    "topic (4 classes)")(
    DatasetSpec(
        load=load_reviews,
        tasks={"sentiment": tasks_lib.binary,
               "topic": functools.partial(tasks_lib.classification, num_classes=len(TOPICS))},
        input_key="tokens",
        class_names={"sentiment": SENTIMENTS, "topic": TOPICS}))

LESIONS = DATASETS.register(
    "lesions", "generated 32x32 medical-style scans: lesion (binary), grade (3 classes, only where a lesion is), "
    "mask (per pixel)")(
    DatasetSpec(
        load=load_lesions,
        tasks={"lesion": tasks_lib.binary,
               "grade": functools.partial(tasks_lib.classification, num_classes=len(GRADES)),
               "mask": functools.partial(tasks_lib.segmentation, num_classes=2)},
        input_key="image",
        output_size=(32, 32),
        class_names={"grade": GRADES, "mask": ("tissue", "lesion")}))


@dataclasses.dataclass(frozen=True)
class ArraysSpec(DatasetSpec):
    """``arrays``: the config gives the files, the input key and each task's kind
    (:mod:`mtl_jax.data.arrays`)."""

    def configured(self, options: Mapping[str, Any], chosen: Mapping[str, Any] | None = None) -> DatasetSpec:
        return dataclasses.replace(self, input_key=str(options.get("input_key", "x")))

    def make_tasks(self, chosen: Mapping[str, Mapping[str, Any]]) -> tuple[Task, ...]:
        if not chosen:
            raise ValueError("no tasks chosen: dataset 'arrays' needs config.tasks = {name: {'kind': ..., ...}}")
        return tuple(arrays.make_task(name, options) for name, options in chosen.items())


ARRAYS = DATASETS.register(
    "arrays", "your own arrays: a .npz (or folder of .npy) per split; config.tasks gives each task's kind "
    "and target key, data.input_key the input")(
    ArraysSpec(load=arrays.load_arrays, tasks={}, input_key="x"))


FEATURE_OPTIONS = ("feature", "kind", "num_classes")
DENSE_KINDS = ("segmentation", "depth")


@dataclasses.dataclass(frozen=True)
class TfdsSpec(DatasetSpec):
    """A TFDS dataset whose features are the tasks (:mod:`mtl_jax.data.tfds_tasks`): a recipe
    (``dsprites``, ``celeb_a``...) fixes the mapping; ``tfds`` takes it from the config."""

    feature_tasks: Mapping[str, FeatureTask] = dataclasses.field(default_factory=dict)

    def configured(self, options: Mapping[str, Any], chosen: Mapping[str, Any] | None = None) -> DatasetSpec:
        if self.output_size is not None and options.get("image_size"):  # dense heads decode to the input's size
            return dataclasses.replace(self, output_size=tuple(int(s) for s in options["image_size"]))
        return self

    def make_tasks(self, chosen: Mapping[str, Mapping[str, Any]]) -> tuple[Task, ...]:
        return super().make_tasks({name: {k: v for k, v in (options or {}).items() if k not in FEATURE_OPTIONS}
                                   for name, options in chosen.items()})


def tfds_recipe(name: str, recipe: Mapping[str, Any]) -> TfdsSpec:
    feature_tasks = recipe["tasks"]
    resolved = {task: ResolvedTask(f.kind, f.num_classes, None) for task, f in feature_tasks.items()}
    return DATASETS.register(name, recipe["description"])(TfdsSpec(
        load=functools.partial(load_tfds, recipe["tfds_name"], tasks=feature_tasks,
                               **{"input": "image", **recipe["defaults"]}),
        tasks={task: task_constructor(r) for task, r in resolved.items()},
        input_key=recipe["defaults"].get("input", "image").replace("/", "_"), feature_tasks=feature_tasks,
        class_names=recipe["class_names"],
        output_size=recipe["defaults"].get("image_size") if any(f.kind in DENSE_KINDS for f in feature_tasks.values())
        else None))


for _name, _recipe in RECIPES.items():
    tfds_recipe(_name, _recipe)

MOVIELENS = DATASETS.register(
    "movielens", "MovieLens 100K ratings (TFDS, downloads; recommendation): rating (regression, stars), like "
    "(binary, 4+ stars)")(
    DatasetSpec(load=load_movielens, tasks={"rating": tasks_lib.regression, "like": tasks_lib.binary},
                input_key="fields"))

MULTI_MNIST = DATASETS.register(
    "multi_mnist", "MultiMNIST (Sener & Koltun 2018) from TFDS mnist (downloads): 36x36 overlapping pairs; left, "
    "right (10 classes each)")(
    DatasetSpec(
        load=load_multi_mnist,
        tasks={name: functools.partial(tasks_lib.classification, num_classes=10) for name in ("left", "right")},
        input_key="image",
        class_names={"left": DIGIT_CLASSES, "right": DIGIT_CLASSES}))


@dataclasses.dataclass(frozen=True)
class AnyTfdsSpec(TfdsSpec):
    """``tfds``: ``data.name`` any TFDS dataset, each task's ``feature`` (default: its name), with
    ``kind`` and ``num_classes`` taken from the feature unless given."""

    def configured(self, options: Mapping[str, Any], chosen: Mapping[str, Any] | None = None) -> DatasetSpec:
        name = options.get("name")
        if not name:
            raise ValueError("dataset 'tfds' needs data.name, a TFDS dataset name (e.g. 'mnist' or "
                             "'diabetic_retinopathy_detection/btgraham-300')")
        if not chosen:
            raise ValueError("dataset 'tfds' needs config.tasks = {name: {'feature': ..., ...}}")
        feature_tasks = {}
        for task, task_options in chosen.items():
            task_options = dict(task_options or {})
            feature_tasks[task] = FeatureTask(str(task_options.get("feature", task)), task_options.get("kind"),
                                              task_options.get("num_classes"))
        features = tfds_features(name, options.get("data_dir"))
        resolved = {task: resolve(task, f, features) for task, f in feature_tasks.items()}
        input_feature = str(options.get("input", "image"))
        return dataclasses.replace(
            self, load=functools.partial(load_tfds, tasks=feature_tasks),
            tasks={task: task_constructor(r) for task, r in resolved.items()},
            input_key=input_feature.replace("/", "_"), feature_tasks=feature_tasks,
            class_names={task: r.class_names for task, r in resolved.items() if r.class_names})


@dataclasses.dataclass(frozen=True)
class TextCorporaSpec(DatasetSpec):
    """One corpus per task (:mod:`mtl_jax.data.text_corpora`): only the chosen tasks' corpora load."""

    def configured(self, options: Mapping[str, Any], chosen: Mapping[str, Any] | None = None) -> DatasetSpec:
        chosen_tasks = tuple(name for name in (chosen or {}) if name in self.tasks)
        return dataclasses.replace(self, load=functools.partial(load_text_corpora, chosen_tasks or tuple(self.tasks)))


IMDB_AG_NEWS = DATASETS.register(
    "imdb_ag_news", "multi-input NLP (TFDS, downloads): sentiment from imdb_reviews, topic (4 classes) from "
    "ag_news_subset, hashed token ids")(
    TextCorporaSpec(
        load=load_text_corpora,
        tasks={name: (functools.partial(tasks_lib.classification, num_classes=len(corpus.class_names))
                      if corpus.kind == "classification" else tasks_lib.binary)
               for name, corpus in TEXT_CORPORA.items()},
        input_key=TEXT_INPUT_KEY,
        class_names={name: corpus.class_names for name, corpus in TEXT_CORPORA.items()}))

TFDS = DATASETS.register(
    "tfds", "any TensorFlow Datasets dataset: data.name, data.input; config.tasks gives each task's feature "
    "(kind and classes from the feature)")(
    AnyTfdsSpec(load=functools.partial(load_tfds, tasks={}), tasks={}, input_key="image"))
