"""The seeds of one config trained together (:func:`mtl_jax.train.seeds.fit_seeds`), each into
its own workdir as ``mtl-jax train`` would leave it.

:func:`train_and_evaluate_seeds` is :func:`~mtl_jax.experiment.train_and_evaluate` for configs
that differ only in ``seed``: the data are loaded and the model built once, the runs train as
one vmapped program, and each workdir then gets its ``config.json``, ``run_signature.json``,
``history.json``, ``results.json`` (plus ``"seeds_at_once"``) and two checkpoints: the final
state (``checkpoints/``) and, with ``best_metric``, the best parameters (``best/``), so
``mtl-jax evaluate`` / ``predict`` read it like any other run. Nothing is written before the
group has trained: an interrupted group trains again from the start.

Which configs can train together (:func:`seeds_together`): those without per-step evaluation
or affinity measurement (epoch-end validation only), without ``task_sampling`` (whose
per-task split of the data depends on the seed) and on one device (a ``mesh`` of several trains
each run data-parallel instead).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Sequence

import jax
import ml_collections

from mtl_jax.config import CONFIG_FILE, config_changes
from mtl_jax.experiment import RESULTS_FILE, best_results, build
from mtl_jax.files import write_json
from mtl_jax.models.conv import convolution_path
from mtl_jax.models.mixed_precision import precision_of
from mtl_jax.train import epoch_stats
from mtl_jax.train.checkpoint import Checkpointer, abstract_of
from mtl_jax.train.hooks.run_files import HISTORY_FILE
from mtl_jax.train.mesh import make_mesh
from mtl_jax.train.run_workdir import SIGNATURE_FILE, previous_run, run_signature
from mtl_jax.train.seeds import SeedRun, evaluate_seeds, fit_seeds
from mtl_jax.train.train_loop import new_meta
from mtl_jax.train.workdir_lock import workdir_lock

__all__ = ["seeds_together", "train_and_evaluate_seeds"]


def seeds_together(config: ml_collections.ConfigDict) -> str | None:
    """Why ``config``'s seeds cannot train as one program, or None when they can."""
    if config.eval_every_steps:
        return "eval_every_steps (validation within epochs)"
    if config.affinity_every_steps:
        return "affinity_every_steps"
    if make_mesh(config.get("mesh")) is not None:
        return "a mesh of several devices (the runs train data-parallel one by one)"
    if config.task_sampling != "none":
        return "task_sampling (the per-task split of the data depends on the seed)"
    return None


def train_and_evaluate_seeds(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[str | Path], *,
                             progress: bool | None = None, data_dir: str | Path | None = None) -> list[dict | str]:
    """Trains the runs of ``configs`` (equal but for ``seed``) together, one into each of
    ``workdirs``; returns per run its ``results.json`` content, or the error (a string) that
    ended it (a non-finite step under ``nonfinite="raise"``)."""
    configs = list(configs)
    if len(configs) != len(workdirs) or not configs:
        raise ValueError(f"give one workdir per config: {len(configs)} configs, {len(workdirs)} workdirs")
    reference = configs[0].copy_and_resolve_references()
    for config in configs[1:]:
        other = config.copy_and_resolve_references()
        other.seed = reference.seed
        changes = config_changes(reference, other)
        if changes:
            raise ValueError(f"configs trained together may differ only in seed: {'; '.join(changes[:3])}")
    reason = seeds_together(reference)
    if reason:
        raise ValueError(f"these runs cannot train together: {reason}")
    with contextlib.ExitStack() as stack:
        folders = [stack.enter_context(workdir_lock(workdir)) for workdir in workdirs]
        for folder in folders:
            if previous_run(folder):
                raise FileExistsError(f"workdir {str(folder)!r} already holds a run ({previous_run(folder)})")
        experiment = build(reference, data_dir)
        c = reference
        runs = fit_seeds(experiment.model, experiment.tasks, experiment.train, seeds=[cf.seed for cf in configs],
                         validation=experiment.data.get("validation"), epochs=c.epochs, batch_size=c.batch_size,
                         optimizer=experiment.optimizer, weighting=experiment.weighting,
                         input_key=experiment.spec.input_key, eval_batch_size=c.eval_batch_size,
                         best_metric=c.best_metric or None, early_stopping_patience=c.early_stopping_patience,
                         min_delta=c.min_delta, nonfinite=c.nonfinite, penalty=experiment.penalty, progress=progress)
        finished = [run for run in runs if run.error is None]
        test = experiment.data.get("test")
        scores = {}
        if test is not None and finished:
            def score(params):
                return evaluate_seeds(experiment.model, experiment.tasks, params, test, c.eval_batch_size,
                                      experiment.spec.input_key)
            scores["final"] = dict(zip([run.seed for run in finished], score([run.state.params for run in finished])))
            with_best = [run for run in finished if run.best_params is not None]
            if with_best:
                scores["best"] = dict(zip([run.seed for run in with_best],
                                          score([run.best_params for run in with_best])))
        out: list[dict | str] = []
        for config, folder, run in zip(configs, folders, runs):
            if run.error is not None:
                out.append(run.error)
                continue
            out.append(_write_run(config, folder, run, experiment, scores, len(configs)))
        return out


def _write_run(config, folder: Path, run: SeedRun, experiment, scores: dict, together: int) -> dict:
    """One run's workdir, as ``train_and_evaluate`` leaves it. Checkpoints: the final state, and
    the best parameters (with the final optimizer and method state: for evaluation and
    prediction, not for resuming)."""
    c = config
    signature = run_signature(experiment.tasks, abstract_of(run.state), convolution_path(experiment.model),
                              precision_of(experiment.model))
    meta = {**new_meta(), "epoch": len(run.history["epoch"]), "history": run.history,
            "stopped_early": run.stopped_early, "epoch_stats": epoch_stats.init()}
    write_json(folder / CONFIG_FILE, config.to_dict())
    write_json(folder / SIGNATURE_FILE, signature)
    checkpointer = Checkpointer(folder, c.keep_checkpoints)
    try:
        checkpointer.save(run.state, meta)
        if run.best_params is not None:
            best_state = run.state.replace(params=run.best_params, step=jax.numpy.asarray(run.best_step, "int32"))
            checkpointer.save_best(best_state, meta)
    finally:
        checkpointer.close()
    write_json(folder / HISTORY_FILE, run.history)
    results: dict[str, Any] = {"epochs_run": len(run.history["epoch"]), "steps": int(run.state.step),
                               "stopped_early": run.stopped_early,
                               "skipped_steps": (run.history.get("skipped_steps") or [0])[-1],
                               "seeds_at_once": together}
    if "final" in scores:
        results["final"] = scores["final"][run.seed]
        if c.best_metric:
            results.update(best_results(c.best_metric, run.best_step, scores["best"][run.seed])
                           if run.best_params is not None else best_results(c.best_metric))
    write_json(folder / RESULTS_FILE, results)
    return results
