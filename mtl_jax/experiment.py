"""A run from a config: build its pieces by name, train into a workdir, evaluate, predict.

:func:`train_and_evaluate` is what ``mtl-jax train`` calls. A workdir ends up holding::

    config.json            the resolved config        run_signature.json  tasks and array shapes
    checkpoints/<step>/    the k latest checkpoints   best/<step>/        the best by best_metric
    metrics.jsonl          step and epoch rows        tensorboard/        the same as TensorBoard events
    history.json           per-epoch metrics          results.json        test metrics (final and best)
    training_progress.png  per-task curves            task_weights.png    task weights over steps
"""
from __future__ import annotations

import csv
import dataclasses
import inspect
import math
import warnings
from pathlib import Path
from typing import Any, Literal, Mapping, NamedTuple, Sequence

import jax
import ml_collections
import numpy as np

import mtl_jax.models.catalog  # noqa: F401 - registers the trunks
import mtl_jax.train.optim  # noqa: F401 - registers optimizers and schedules
import mtl_jax.weighting  # noqa: F401 - registers the weighting methods
from mtl_jax import checks
from mtl_jax.config import CONFIG_FILE, config_changes, read_config
from mtl_jax.data.batching import steps_per_epoch
from mtl_jax.data.catalog import DatasetSpec
from mtl_jax.models.catalog import NO_TRUNK, build_model
from mtl_jax.models.mixed_precision import check_precision, mixed_precision
from mtl_jax.models.sharing_penalties import make_penalty
from mtl_jax.balancing import at_level, chain, observed
from mtl_jax.data.sources import RecordSource, head, is_record_source, num_examples
from mtl_jax.data.task_mixture import SAMPLINGS, TaskMixture, is_mixture, split_by_task
from mtl_jax.names import did_you_mean
from mtl_jax.registry import AGGREGATORS, ARCHITECTURES, DATASETS, MODELS, OPTIMIZERS, SCHEDULES, WEIGHTINGS
from mtl_jax.tasks import Task
from mtl_jax.files import atomic_write, write_json
from mtl_jax.train.checkpoint import Checkpointer, UnreadableCheckpoint
from mtl_jax.train.loop import evaluate, fit, predict, previous_run
from mtl_jax.train.mesh import FSDP_MIN_SIZE, check_fsdp_min_size, make_mesh
from mtl_jax.train.workdir_lock import workdir_lock
from mtl_jax.train.optim import make_optimizer
from mtl_jax.train.state import create_train_state
from mtl_jax.weighting.log_losses import log_losses

Which = Literal["best", "latest"]
RESULTS_FILE = "results.json"


@dataclasses.dataclass(frozen=True)
class Experiment:
    """Everything a config describes, built."""
    config: ml_collections.ConfigDict
    spec: DatasetSpec
    data: Mapping[str, Mapping[str, np.ndarray]]
    tasks: tuple[Task, ...]
    model: Any
    optimizer: Any
    learning_rate_fn: Any
    weighting: Any
    penalty: Any = None
    train: Any = None  # what training reads: data["train"], or its multi-input TaskMixture (task_sampling)


def check(config: ml_collections.ConfigDict) -> tuple[DatasetSpec, tuple[Task, ...]]:
    """Every name (dataset, tasks, data options, trunk, architecture, methods, optimizer,
    schedule, penalty) and count of ``config`` checked, before any data are loaded; returns the
    dataset's spec and the tasks."""
    chosen = config.tasks.to_dict() if hasattr(config.tasks, "to_dict") else config.tasks
    spec: DatasetSpec = DATASETS.get(config.dataset).configured(dict(config.data), chosen)
    tasks = spec.make_tasks(chosen)
    for registry, name in ((ARCHITECTURES, config.architecture), (WEIGHTINGS, config.weighting),
                           (OPTIMIZERS, config.optimizer), (SCHEDULES, config.schedule)):
        registry.get(name)
    if config.model != NO_TRUNK:
        MODELS.get(config.model)
    make_penalty(config.penalty, config.penalty_weight)
    if config.aggregator != "none":
        AGGREGATORS.get(config.aggregator)
    check_config_counts(config)
    make_mesh(config.get("mesh"))  # its axes and device count
    check_fsdp_min_size(config.get("fsdp_min_size", FSDP_MIN_SIZE))
    check_precision(config.get("precision", "float32"), config.get("loss_scale", 1.0))
    spec.check_options(config.data)
    check_task_sampling(config, tasks)
    return spec, tasks


def check_task_sampling(config: ml_collections.ConfigDict, tasks: tuple[Task, ...]) -> None:
    """``task_sampling``, ``sampling_temperature`` and ``task_shares`` make sense for ``tasks``."""
    if config.task_sampling not in ("none",) + SAMPLINGS:
        hint = did_you_mean(config.task_sampling, SAMPLINGS)
        raise ValueError(f"unknown task_sampling {config.task_sampling!r}{hint}; expected none or one of {SAMPLINGS}")
    shares = dict(config.task_shares)
    names = [t.name for t in tasks]
    unknown = [name for name in shares if name not in names]
    if unknown:
        raise KeyError(f"task_shares: unknown task(s) {unknown}; the tasks are {names}")
    bad = {name: value for name, value in shares.items()
           if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0}
    if bad:
        raise ValueError(f"task_shares must be numbers > 0, got {bad}")
    if shares and config.task_sampling == "none":
        raise ValueError("task_shares deal the train split between tasks: set task_sampling too")
    if not (math.isfinite(config.sampling_temperature) and config.sampling_temperature > 0):
        raise ValueError(f"sampling_temperature must be > 0, got {config.sampling_temperature}")


def multi_input(train, tasks: tuple[Task, ...], config: ml_collections.ConfigDict):
    """What training reads: a dataset that is one corpus per task (a :class:`TaskMixture`) mixed by
    ``task_sampling`` (proportional unless set); otherwise the train split as it is, or, with
    ``task_sampling``, dealt into one part per task (``task_shares``) and mixed."""
    if is_mixture(train):
        if config.task_shares:
            raise ValueError("task_shares deal one train split between tasks, but this dataset already has one "
                             "corpus per task")
        sampling = "proportional" if config.task_sampling == "none" else config.task_sampling
        return train.with_sampling(sampling, config.sampling_temperature)
    if config.task_sampling == "none":
        return train
    shares = dict(config.task_shares)
    groups = [(t.target_key,) for t in tasks]
    parts = split_by_task(train, groups, [float(shares.get(t.name, 1.0)) for t in tasks], config.seed)
    return TaskMixture(parts, config.task_sampling, config.sampling_temperature)


def build(config: ml_collections.ConfigDict, data_dir: str | Path | None = None) -> Experiment:
    """Looks every named piece up in its registry and builds it (data are loaded here)."""
    spec, tasks = check(config)
    penalty = make_penalty(config.penalty, config.penalty_weight)
    data = spec.load(data_dir=data_dir, **loader_options(spec, config.data))
    train = multi_input(data["train"], tasks, config)
    output_size = spec.output_size
    if output_size is None and any(task.dense for task in tasks):  # per-pixel heads: the input's height and width
        output_size = tuple(head(data["train"], 1)[spec.input_key].shape[1:3])
    model = build_model(config.model, tasks, trunk_kwargs=dict(config.model_kwargs), head_hidden=config.head_hidden,
                        pool=config.pool, output_size=output_size, architecture=config.architecture,
                        architecture_kwargs=dict(config.architecture_kwargs))
    model = mixed_precision(model, config.get("precision", "float32"), config.get("loss_scale", 1.0))
    total_steps = config.epochs * steps_per_epoch(train, config.batch_size)
    optimizer, lr_fn = make_optimizer(
        config.optimizer, config.learning_rate, schedule=config.schedule, total_steps=total_steps,
        warmup_steps=config.warmup_steps, end_factor=config.end_factor, decay_rate=config.decay_rate,
        decay_steps=config.decay_steps, grad_clip_norm=config.grad_clip_norm, weight_decay=config.weight_decay,
        momentum=config.momentum)
    weighting = make_weighting(config.weighting, tasks, dict(config.weighting_kwargs),
                               steps_per_epoch=steps_per_epoch(train, config.batch_size),
                               log=config.log_losses, aggregator=config.aggregator,
                               aggregator_kwargs=dict(config.aggregator_kwargs), level=config.gradient_level,
                               diagnostics=config.gradient_diagnostics)
    return Experiment(config, spec, data, tasks, model, optimizer, lr_fn, weighting, penalty, train)


def loader_options(spec: DatasetSpec, options: Mapping[str, Any]) -> dict[str, Any]:
    """The config's ``data`` options for the dataset's loader. A loader that can stream
    (``in_memory=False``: the generated TFDS builders) streams unless ``data.in_memory=True``
    asks for the splits in memory: nothing reads a whole split into memory by default. Both
    give the same batches, so the same run bitwise (``tests/test_sources.py``)."""
    options = dict(options)
    if "in_memory" in inspect.signature(spec.load).parameters:
        options.setdefault("in_memory", False)
    return options


COUNT_FIELDS = {"epochs": 0, "batch_size": 1, "eval_batch_size": 1, "seed": 0, "keep_checkpoints": 1,
                "eval_every_steps": 0, "log_every_steps": 0, "checkpoint_every_steps": 0, "warmup_steps": 0,
                "early_stopping_patience": 0, "affinity_every_steps": 0}


def check_config_counts(config: ml_collections.ConfigDict) -> None:
    """Whole-number fields are whole numbers in range (before any data are loaded)."""
    for name, minimum in COUNT_FIELDS.items():
        checks.check_count(name, config[name], minimum)


def make_weighting(name: str, tasks: tuple[Task, ...], kwargs: dict, *, steps_per_epoch: int,
                   log: bool = False, aggregator: str = "none", aggregator_kwargs: dict | None = None,
                   level: str = "feature", diagnostics: bool = False):
    """The named weighting method (``steps_per_epoch`` goes to methods that take it, e.g. DWA),
    on log-losses if ``log``, followed by the named gradient aggregator unless ``"none"``;
    gradient-based methods see the tasks' gradients at ``level`` (feature | parameter), and
    ``diagnostics`` makes even a loss-only method's step form that Gramian (to log it)."""
    factory = WEIGHTINGS.get(name)
    if "steps_per_epoch" in inspect.signature(factory).parameters:
        kwargs = {"steps_per_epoch": steps_per_epoch, **kwargs}
    try:
        weighting = factory(tasks, **kwargs)
    except TypeError as error:
        raise ValueError(f"weighting {name!r}: bad weighting_kwargs {sorted(kwargs)} ({error})") from error
    pieces = [log_losses(), weighting] if log else [weighting]
    if aggregator != "none":
        try:
            pieces.append(AGGREGATORS.get(aggregator)(**(aggregator_kwargs or {})))
        except TypeError as error:
            raise ValueError(f"aggregator {aggregator!r}: bad aggregator_kwargs ({error})") from error
    weighting = at_level(chain(*pieces), level)
    return observed(weighting, level) if diagnostics else weighting


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path, *, resume: bool = False,
                       progress: bool | None = None, data_dir: str | Path | None = None) -> dict:
    """Trains as configured into ``workdir`` (or resumes it) and returns the test results.

    Returns and writes ``results.json``: ``{"final": test metrics of the last state, "steps",
    "best": test metrics of the best checkpoint (when best_metric is set; None with a
    ``"best_note"`` when no best checkpoint was saved), "best_step", "epochs_run",
    "stopped_early", "skipped_steps"}``. The config is written to ``config.json`` only once
    the run is validated; a refused run leaves the workdir as it was.
    """
    with workdir_lock(workdir) as workdir:
        if resume and (workdir / CONFIG_FILE).exists():
            changes = config_changes(read_config(workdir), config)
            if changes:
                warnings.warn(f"resuming {str(workdir)!r} with a changed config: {'; '.join(changes)}",
                              stacklevel=2)
        elif not resume and previous_run(workdir):
            raise FileExistsError(f"workdir {str(workdir)!r} already holds a run ({previous_run(workdir)}); pass "
                                  "--resume to continue it or choose another --workdir")
        experiment = build(config, data_dir)
        c = config
        mesh = make_mesh(c.get("mesh"))
        result = fit(experiment.model, experiment.tasks, experiment.train,
                     validation=experiment.data.get("validation"), epochs=c.epochs, batch_size=c.batch_size,
                     optimizer=experiment.optimizer, weighting=experiment.weighting, seed=c.seed,
                     input_key=experiment.spec.input_key, eval_batch_size=c.eval_batch_size, progress=progress,
                     workdir=workdir, resume=resume, checkpoint_every_steps=c.checkpoint_every_steps,
                     keep_checkpoints=c.keep_checkpoints, best_metric=c.best_metric or None,
                     early_stopping_patience=c.early_stopping_patience, min_delta=c.min_delta,
                     eval_every_steps=c.eval_every_steps, log_every_steps=c.log_every_steps, nonfinite=c.nonfinite,
                     learning_rate_fn=experiment.learning_rate_fn, tensorboard=c.tensorboard,
                     plots=c.get("plots", True),
                     affinity_every_steps=c.affinity_every_steps,
                     affinity_learning_rate=c.affinity_learning_rate or None, penalty=experiment.penalty,
                     mesh=mesh, fsdp_min_size=c.get("fsdp_min_size", FSDP_MIN_SIZE),
                     run_files={CONFIG_FILE: config.to_dict()})
        test = experiment.data.get("test")
        results: dict[str, Any] = {"epochs_run": len(result.history["epoch"]),
                                   "steps": int(result.state.step),
                                   "stopped_early": len(result.history["epoch"]) < c.epochs,
                                   "skipped_steps": (result.history.get("skipped_steps") or [0])[-1]}
        if test is not None:
            evaluate_with = lambda params: evaluate(experiment.model, experiment.tasks, params, test,  # noqa: E731
                                                    c.eval_batch_size, experiment.spec.input_key, mesh,
                                                    c.get("fsdp_min_size", FSDP_MIN_SIZE))
            results["final"] = evaluate_with(result.state.params)
            if c.best_metric:
                best = restore_params(experiment, workdir, "best")
                results.update(best_results(c.best_metric, best.step, evaluate_with(best.params))
                               if best.checkpoint == "best" else best_results(c.best_metric))
        write_json(workdir / RESULTS_FILE, results)
        return results


def best_results(best_metric: str, step: int | None = None, metrics: dict | None = None) -> dict:
    """``results.json``'s best-checkpoint fields: its step and test metrics, or (no step: no best
    checkpoint was saved) None and a note saying why."""
    if step is not None:
        return {"best_step": step, "best": metrics}
    return {"best_step": None, "best": None,
            "best_note": f"no best checkpoint was saved: validation {best_metric} never gave a finite value"}


class CheckpointParams(NamedTuple):
    step: int
    params: Any
    checkpoint: Which  # the checkpoint they came from: "best", or "latest" when no best one was saved


def restore_params(experiment: Experiment, workdir: str | Path, which: Which = "best") -> CheckpointParams:
    """The parameters of the best (the latest when no best one was saved) or latest checkpoint.

    Reads only: nothing in the workdir is created, moved or deleted. A damaged best checkpoint
    raises :class:`~mtl_jax.train.checkpoint.UnreadableCheckpoint` (the latest can still be
    asked for); a damaged latest one is skipped with a warning for the one before it.
    """
    if which not in ("best", "latest"):
        raise ValueError(f"checkpoint must be 'best' or 'latest', got {which!r}")
    example = head(experiment.data["train"], 1)[experiment.spec.input_key]
    abstract = jax.eval_shape(lambda: create_train_state(experiment.model, experiment.tasks, experiment.optimizer,
                                                         experiment.weighting, example, experiment.config.seed))
    checkpointer = Checkpointer(workdir, read_only=True)
    try:
        restored, used = None, which
        if which == "best":
            try:
                restored = checkpointer.restore_best(abstract)
            except UnreadableCheckpoint as error:
                raise UnreadableCheckpoint(f"{error}; the latest checkpoint can be used instead "
                                           "(--checkpoint latest)") from None
        if restored is None:
            restored, used = checkpointer.restore_latest(abstract, None), "latest"
    finally:
        checkpointer.close()
    if restored is None:
        raise FileNotFoundError(f"no readable checkpoint in {str(workdir)!r}")
    return CheckpointParams(restored.step, restored.state.params, used)


def load_run(workdir: str | Path, data_dir: str | Path | None = None) -> Experiment:
    """The experiment a workdir's saved config describes, on :func:`mesh_here`."""
    config = read_config(workdir)
    config.mesh = mesh_here(config)
    return build(config, data_dir)


def mesh_here(config: ml_collections.ConfigDict) -> dict:
    """The mesh spec a finished run is evaluated and predicted on: its config's, or every device
    here (``{"data": -1}``) where this machine has fewer devices than the run trained on."""
    try:
        make_mesh(config.get("mesh"))
    except ValueError:
        return {"data": -1}
    return dict(config.get("mesh") or {})


def evaluate_run(workdir: str | Path, split: str = "test", which: Which = "best",
                 data_dir: str | Path | None = None) -> dict[str, float]:
    """Metrics of a workdir's best (or latest) checkpoint on a split; writes ``eval_<split>.json``
    (naming the checkpoint used). Nothing else in the workdir changes."""
    experiment = load_run(workdir, data_dir)
    if split not in experiment.data:
        raise KeyError(f"unknown split {split!r}{did_you_mean(split, experiment.data)} "
                       f"(this dataset has {sorted(experiment.data)})")
    restored = restore_params(experiment, workdir, which)
    metrics = evaluate(experiment.model, experiment.tasks, restored.params, experiment.data[split],
                       experiment.config.eval_batch_size, experiment.spec.input_key,
                       make_mesh(experiment.config.get("mesh")), experiment.config.get("fsdp_min_size", FSDP_MIN_SIZE))
    write_json(Path(workdir) / f"eval_{split}.json",
               {"checkpoint": restored.checkpoint, "step": restored.step, "metrics": metrics})
    return metrics


def prediction_columns(outputs: Mapping[str, Any], class_names: Mapping[str, Sequence[str]] | None = None,
                       targets: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Flat named columns: ``<task>`` (or ``<task>_<j>``) values, ``<task>_label`` and its
    ``<task>_class`` name, ``<task>_prob_<c>``; with ``targets`` (a dataset split) the true
    ``<task>_true`` (and ``<task>_true_class``) beside each task's predictions."""
    columns = {}
    class_names, targets = class_names or {}, targets or {}
    for task, out in outputs.items():
        names = class_names.get(task)
        if isinstance(out, Mapping):
            labels, probs = np.asarray(out["labels"]), np.asarray(out["probabilities"])
            if labels.ndim > 1:
                raise ValueError(f"task {task!r} predicts per pixel: write NPZ, not CSV")
            columns[f"{task}_label"] = labels
            if names:
                columns[f"{task}_class"] = np.asarray(names, object)[labels]
            probs = probs.reshape(len(probs), -1)
            columns.update({f"{task}_prob_{c}": probs[:, c] for c in range(probs.shape[1])})
        else:
            values = np.asarray(out).reshape(len(out), -1)
            if values.shape[1] == 1:
                columns[task] = values[:, 0]
            else:
                columns.update({f"{task}_{j}": values[:, j] for j in range(values.shape[1])})
        if task in targets:
            true = np.asarray(targets[task]).reshape(len(targets[task]), -1)
            if true.shape[1] == 1:
                columns[f"{task}_true"] = true[:, 0]
                if names and np.issubdtype(true.dtype, np.integer):
                    # a missing label (-1) has no class name
                    columns[f"{task}_true_class"] = np.where(true[:, 0] >= 0,
                                                             np.asarray(names, object)[np.clip(true[:, 0], 0, None)], "")
            else:
                columns.update({f"{task}_true_{j}": true[:, j] for j in range(true.shape[1])})
    return columns


def _split_targets(data, tasks) -> dict[str, np.ndarray]:
    """Each task's targets of a split (read record by record for a source, without its inputs)."""
    names = [t.name for t in tasks]
    if is_record_source(data):
        keys = [n for n in names if n in data.keys]
        return RecordSource(data.source, keys=keys, transform=data.transform, order=data.order, threads=0,
                            dtypes={k: t for k, t in data.dtypes.items() if k in keys}).read(np.arange(len(data)))
    return {n: data[n] for n in names if n in data}


def _write_csv(file, columns: Mapping[str, np.ndarray], count: int) -> None:
    """``index`` then the columns; floats to 7 significant digits, class names as text."""
    writer = csv.writer(file, lineterminator="\n")
    names = list(columns)
    writer.writerow(["index", *names])

    def cell(value):
        return f"{value:.7g}" if isinstance(value, (float, np.floating)) else str(value)

    for i in range(count):
        writer.writerow([i, *(cell(columns[n][i]) for n in names)])


def load_inputs(path: str | Path, input_key: str, expected: tuple[int, ...]) -> np.ndarray:
    """The inputs in an ``.npy`` file (or under ``input_key`` in an ``.npz``), checked against the
    shape of one example the model was trained on."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"inputs file {str(path)!r} does not exist") from None
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"inputs file {str(path)!r} is not a NumPy .npy or .npz file ({error})") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if input_key not in loaded.files:
                raise KeyError(f"inputs file {str(path)!r} has no array {input_key!r}; it holds {loaded.files}")
            array = loaded[input_key]
    else:
        array = loaded
    if array.ndim == 0 or len(array) == 0:
        raise ValueError(f"inputs file {str(path)!r} holds no examples (shape {array.shape})")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise ValueError(f"inputs file {str(path)!r} holds {array.dtype} values; the model takes numbers")
    if tuple(array.shape[1:]) != tuple(expected):
        raise ValueError(f"inputs file {str(path)!r} has shape {array.shape}; the model expects "
                         f"(N, {', '.join(map(str, expected))})")
    return array


def predict_run(workdir: str | Path, output: str | Path, *, split: str = "test", inputs: str | Path | None = None,
                which: Which = "best", data_dir: str | Path | None = None) -> Path:
    """Writes per-task predictions for a split (or an ``.npy``/``.npz`` of inputs) to CSV or NPZ."""
    output = Path(output)
    if output.suffix not in (".csv", ".npz"):
        raise ValueError(f"predictions are written as .csv or .npz, not {output.name!r}")
    experiment = load_run(workdir, data_dir)
    key = experiment.spec.input_key
    if inputs is not None:
        array = load_inputs(inputs, key, np.shape(head(experiment.data["train"], 1)[key])[1:])
    else:
        if split not in experiment.data:
            raise KeyError(f"unknown split {split!r}{did_you_mean(split, experiment.data)} "
                           f"(this dataset has {sorted(experiment.data)})")
        data = experiment.data[split]
        array = data if is_record_source(data) else data[key]
    params = restore_params(experiment, workdir, which).params
    outputs = predict(experiment.model, experiment.tasks, params, array, experiment.config.eval_batch_size,
                      input_key=key, mesh=make_mesh(experiment.config.get("mesh")),
                      fsdp_min_size=experiment.config.get("fsdp_min_size", FSDP_MIN_SIZE))
    targets = _split_targets(experiment.data[split], experiment.tasks) if inputs is None else {}
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix == ".npz":
        flat = {f"{t}/{k}": v for t, out in outputs.items()
                for k, v in (out.items() if isinstance(out, Mapping) else [("values", out)])}
        flat.update({f"{t}/true": v for t, v in targets.items()})
        with atomic_write(output, "wb") as file:
            np.savez(file, **flat)
    else:
        columns = prediction_columns(outputs, experiment.spec.class_names, targets)
        with atomic_write(output, "w") as file:
            _write_csv(file, columns, num_examples(array) if is_record_source(array) else len(array))
    return output
