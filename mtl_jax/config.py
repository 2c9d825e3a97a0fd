"""Run configs: ml_collections ``ConfigDict`` files with command-line overrides.

A config file is a Python file with ``get_config()`` returning a ``ConfigDict`` (start from
:func:`default_config`, which lists every field with its default). ``--set key=value``
overrides a field; values are Python literals (``--set learning_rate=3e-4``,
``--set head_hidden=(128,64)``, ``--set tasks.kind.weight=1.0``) or plain strings
(``--set weighting=equal``). Unknown keys and type changes are refused with the known
keys listed. The resolved config is saved as ``<workdir>/config.json``. A config file may
import a shared base from its own folder (``from houses_mtl import houses_mtl``).
"""
from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import json
import sys
from pathlib import Path
from typing import Sequence

import ml_collections

from mtl_jax.names import did_you_mean

CONFIG_FILE = "config.json"
# Sub-dicts whose keys are free (task names, a dataset's or trunk's own options).
OPEN_SECTIONS = ("tasks", "data", "model_kwargs", "architecture_kwargs", "weighting_kwargs", "aggregator_kwargs",
                 "task_shares")


def default_config() -> ml_collections.ConfigDict:
    """Every field the runner reads, with its default."""
    c = ml_collections.ConfigDict()
    c.dataset = "houses"            # mtl-jax list: datasets
    c.data = {}                     # the dataset loader's options (sizes, seed, ...); generated datasets
    #                                 stream their splits unless data.in_memory=True
    c.tasks = {}                    # task name -> {"weight": ..., optional "loss", "metrics"}
    c.task_sampling = "none"        # multi-input: none (every example labels every task) | all | round_robin |
    #                                 proportional | temperature: the train split is dealt into one disjoint part
    #                                 per task, each labelling only its task, mixed per step by this rule
    c.sampling_temperature = 2.0    # task_sampling=temperature: part d drawn with probability ~ n_d^(1/tau)
    c.task_shares = {}              # multi-input: task name -> share of the train split (default: equal)
    c.model = "seed_cnn"            # trunk name (mtl-jax list: models), or "none" for architectures with their own
    c.model_kwargs = {}             # the trunk's fields
    c.architecture = "hard"         # how tasks share: hard | mmoe | ple | cross_stitch | columns | mtan
    c.architecture_kwargs = {}      # the architecture's options (experts, levels, widths, ...)
    c.penalty = "none"              # soft-sharing coupling added to the loss: none | l2 | trace_norm
    c.penalty_weight = 0.0
    c.head_hidden = ()              # hidden widths of every task head
    c.pool = "flatten"              # how global heads read a feature map: flatten | mean
    c.weighting = "static"          # loss weighting (mtl-jax list: weighting methods)
    c.weighting_kwargs = {}         # the method's options (mtl-jax list shows the methods)
    c.log_losses = False            # hand the method log-losses: scale-invariant across tasks
    c.aggregator = "none"           # gradient aggregation after weighting: mgda, pcgrad, upgrad, ... (mtl-jax list)
    c.aggregator_kwargs = {}
    c.gradient_level = "feature"    # where gradient methods see the tasks' gradients: feature (w.r.t. the shared
    #                                 representation, ~1 EW step) | parameter (exact, all shared parameters)
    c.gradient_diagnostics = False  # log task-gradient cosines and conflicts (Gramian at gradient_level)
    c.affinity_every_steps = 0      # measure inter-task affinity (Fifty et al. 2021) every N steps (0: never)
    c.affinity_learning_rate = 0.0  # its lookahead step size (0: the schedule's learning rate)
    c.optimizer = "adam"            # adam | adamw | sgd | rmsprop
    c.learning_rate = 1e-3
    c.momentum = 0.0                # sgd / rmsprop
    c.weight_decay = 0.0            # adamw (decoupled) or sgd / rmsprop (L2 added to the gradient)
    c.schedule = "constant"         # constant | cosine | linear | exponential
    c.warmup_steps = 0
    c.end_factor = 0.0              # cosine / linear: final lr = end_factor x learning_rate
    c.decay_rate = 0.5              # exponential
    c.decay_steps = 1000            # exponential
    c.grad_clip_norm = 0.0          # clip the global gradient norm (0: off)
    c.epochs = 10
    c.batch_size = 64
    c.eval_batch_size = 256
    c.seed = 0                      # initialisation, dropout, shuffling, random weightings
    c.eval_every_steps = 0          # also evaluate every N steps (0: epoch ends only)
    c.log_every_steps = 10          # write step losses, weights, gradient norm every N steps
    c.checkpoint_every_steps = 0    # also checkpoint every N steps (0: epoch ends only)
    c.keep_checkpoints = 3          # latest checkpoints kept (the best one is kept apart)
    c.best_metric = ""              # validation metric for the best checkpoint, e.g. "price/rmse"
    c.early_stopping_patience = 0   # evaluations without improvement before stopping (0: never)
    c.min_delta = 0.0
    c.nonfinite = "raise"           # raise | skip: what a non-finite loss or gradient does
    c.tensorboard = True
    c.plots = True                  # draw training_progress.png / task_weights.png when training ends
    c.precision = "float32"         # float32 | bfloat16 | float16: the model's compute dtype; parameters,
                                    # optimizer and balancing state, losses and Gramians stay float32
                                    # (mtl_jax/models/mixed_precision.py)
    c.loss_scale = 1.0              # float16 only: a static loss scale (e.g. 1024) so small gradients survive,
                                    # or "dynamic": found by the run (halved on overflow, doubled when stable)
    c.mesh = {"data": -1}           # devices per axis (-1: all JAX sees): each batch's rows split over them,
                                    # the state replicated; {"data": -1, "fsdp": k}: arrays of at least
                                    # fsdp_min_size elements split in k (mtl_jax/train/mesh.py)
    c.fsdp_min_size = 2 ** 20       # elements (4 MiB of float32): smaller arrays stay replicated
    return _number_or_name(c)


# Fields that take a number or a name (loss_scale = 1024 or "dynamic"): ConfigDict fixes a
# field's type at its first value, so these are references that take any type.
NUMBER_OR_NAME = ("loss_scale",)


def _number_or_name(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    for name in NUMBER_OR_NAME:
        if name in config:
            config[name] = ml_collections.FieldReference(config[name], field_type=object)
    return config


class ConfigFileError(ValueError):
    """A config file that does not run: its syntax error or exception, with the file named."""

    def __init__(self, path: Path, error: BaseException):
        where = ""
        if isinstance(error, SyntaxError) and error.lineno:
            other = error.filename and Path(error.filename).resolve() != path.resolve()
            where = f" ({error.filename}, line {error.lineno})" if other else f", line {error.lineno}"
        message = error.msg if isinstance(error, SyntaxError) else str(error)
        super().__init__(f"config file {str(path)!r}{where}: {type(error).__name__}: {message}")


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` from the file at ``path`` and applies ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    spec = importlib.util.spec_from_file_location(f"mtl_jax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # configs may import shared bases beside them
    try:
        spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        config = get_config() if callable(get_config) else None
    except Exception as error:  # noqa: BLE001 - whatever the user's file raises is reported as its error
        raise ConfigFileError(path, error) from error
    finally:
        sys.path.remove(str(path.resolve().parent))
    if not callable(get_config):
        raise ValueError(f"config file {str(path)!r} defines no get_config()")
    if not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(config)
    return apply_overrides(config, overrides)


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """Applies ``["a.b=1", ...]``; refuses unknown keys outside :data:`OPEN_SECTIONS`."""
    config = _number_or_name(ml_collections.ConfigDict(config.to_dict()))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = config
        for depth, part in enumerate(parts):
            if part not in node and (depth == 0 or parts[0] not in OPEN_SECTIONS):
                hint = did_you_mean(part, node.keys()) or "."
                raise KeyError(f"unknown config key {key!r}{hint} Known: {', '.join(sorted(node.keys()))}")
            if depth < len(parts) - 1:
                if part not in node:
                    node[part] = {}
                node = node[part]
        leaf = parts[-1]
        value = parse_value(text)
        old = node[leaf] if leaf in node else None
        if isinstance(old, tuple) and isinstance(value, (int, float)):
            value = (value,)
        try:
            node[leaf] = value
        except TypeError as error:
            raise TypeError(f"override {key}={text!r}: {error}") from error
    return config


def read_config(workdir: str | Path) -> ml_collections.ConfigDict:
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} not found: is {str(workdir)!r} a workdir made by 'mtl-jax train'?")
    return _number_or_name(ml_collections.ConfigDict(json.loads(path.read_text())))


def config_changes(old: ml_collections.ConfigDict, new: ml_collections.ConfigDict) -> list[str]:
    """``["key: old -> new", ...]`` for every leaf that differs (tuples and lists compare equal).
    A field ``old`` lacks (written before the field existed) is no change where ``new`` has the
    field's default value."""
    def flat(d, prefix=""):
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
        return out
    a, b, defaults = flat(old.to_dict()), flat(new.to_dict()), flat(default_config().to_dict())
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and not (k not in a and k in defaults and b.get(k) == defaults[k])]


def _comments() -> dict[str, str]:
    """``{field: comment}`` from :func:`default_config`'s source (a comment may continue on
    the next line)."""
    comments, last = {}, None
    for line in inspect.getsource(default_config).splitlines():
        field = re.match(r"\s*c\.(\w+)\s*=.*?#\s*(.*)$", line)
        more = re.match(r"\s*#\s+(.*)$", line)
        if field:
            last = field.group(1)
            comments[last] = field.group(2).strip()
        elif more and last:
            comments[last] += " " + more.group(1).strip()
        else:
            last = None
    return comments


def describe(config: ml_collections.ConfigDict) -> str:
    """The resolved config as ``key = value  # meaning`` lines, every field (defaults included)."""
    defaults, comments = default_config().to_dict(), _comments()
    lines = []

    def walk(node, prefix):
        for key in node.keys():
            value = node[key]
            name = f"{prefix}{key}"
            if isinstance(value, (dict, ml_collections.ConfigDict)) and len(value):
                if not prefix and key in comments:
                    lines.append(f"{name}:  # {comments[key]}")
                walk(value, f"{name}.")
                continue
            value = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
            note = comments.get(key, "") if not prefix else ""
            changed = "" if prefix or key not in defaults or defaults[key] == value else f"  (default: {defaults[key]!r})"
            lines.append(f"{name} = {value!r}" + (f"  # {note}" if note else "") + changed)

    walk(config, "")
    return "\n".join(lines)
