"""A workdir's run: what a checkpoint's shape depends on, and whether a run may use the workdir.

``run_signature`` records the tasks and every array's shape (and the convolution path) in
``run_signature.json``; ``open_run`` decides, before anything is written, whether a new run may
start in a workdir (none there yet) or a resumed one may continue (a usable checkpoint of the
same signature), and returns the checkpoint to continue from.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import jax

from mtl_jax.tasks import Task
from mtl_jax.train.checkpoint import CORRUPT_DIR, Checkpointer, Restored, saved_steps, set_aside_steps
from mtl_jax.train.hooks.run_files import HISTORY_FILE

SIGNATURE_FILE = "run_signature.json"


def run_signature(tasks: Sequence[Task], abstract_state, convolution: str | None = None,
                  precision: str = "float32") -> dict:
    """What a checkpoint's shape depends on (the tasks and every array's shape and dtype) and,
    for a model with a ``conv`` option, the convolution path it takes
    (:func:`mtl_jax.models.conv.convolution_path`), and the compute precision unless float32
    (:func:`mtl_jax.models.mixed_precision.precision_of`): a resume must compute what the run would have."""
    leaves = jax.tree_util.tree_flatten_with_path(abstract_state)[0]
    signature = {"tasks": {t.name: {"kind": t.kind, "output_dim": t.output_dim} for t in tasks},
                 "arrays": {jax.tree_util.keystr(path): f"{leaf.dtype}{list(leaf.shape)}" for path, leaf in leaves}}
    if convolution is not None:
        signature["convolution"] = convolution
    if precision != "float32":
        signature["precision"] = precision
    return signature


def signature_mismatch(saved: dict, current: dict) -> str | None:
    """A readable description of how ``current`` differs from ``saved``, or None."""
    problems = []
    old_tasks, new_tasks = saved["tasks"], current["tasks"]
    if list(old_tasks) != list(new_tasks):
        problems.append(f"tasks were {list(old_tasks)}, now {list(new_tasks)}")
    changed = [f"{name}: {old_tasks[name]} -> {new_tasks[name]}" for name in old_tasks
               if name in new_tasks and old_tasks[name] != new_tasks[name]]
    problems += [f"task {c}" for c in changed]
    old, new = saved["arrays"], current["arrays"]
    if not problems and old != new:
        diffs = [f"{k}: {old.get(k, 'absent')} -> {new.get(k, 'absent')}"
                 for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        problems.append(f"{len(diffs)} array shapes differ (model or optimizer changed), e.g. "
                        + "; ".join(diffs[:4]))
    if saved.get("convolution", current.get("convolution")) != current.get("convolution"):
        problems.append(f"its convolutions ran on the {saved['convolution']} path and would now run on "
                        f"{current.get('convolution')} (different rounding): start both in the same setting "
                        "(mtl_jax.cpu.enable_fast_convolutions() before JAX starts, as the mtl-jax command does; "
                        "MTL_JAX_KEEP_XLA_FLAGS=1 keeps it off), or choose the model's conv explicitly")
    if saved.get("precision", "float32") != current.get("precision", "float32"):
        problems.append(f"it computed in {saved.get('precision', 'float32')} and would now compute in "
                        f"{current.get('precision', 'float32')}: resume with the precision it started with")
    return "; ".join(problems) or None


def previous_run(workdir: Path) -> str | None:
    """What in ``workdir`` shows that a run trained there (and checkpointed), or None.

    Latest checkpoints, checkpoints set aside as damaged, and the files a run writes when it
    ends (``history.json``, ``results.json``). A run killed before its first checkpoint leaves
    none of them: the steps it logged are simply trained again.
    """
    found = []
    if saved_steps(workdir):
        found.append(f"checkpoints up to step {saved_steps(workdir)[-1]}")
    if set_aside_steps(workdir):
        found.append(f"damaged checkpoints {set_aside_steps(workdir)} in {CORRUPT_DIR}/")
    found += [name for name in (HISTORY_FILE, "results.json") if (workdir / name).exists()]
    return ", ".join(found) or None


def open_run(workdir: Path, checkpointer: Checkpointer, resume: bool, signature: dict, abstract_state,
             abstract_output: Callable[[], Any]) -> Restored | None:
    """Decides, before anything is written, whether a run may use ``workdir``; returns the
    checkpoint to continue from (None: start at step 0).

    A new run (``resume=False``) needs a workdir without a previous run. A resumed run needs a
    usable checkpoint whenever a previous run exists: it never starts again from step 0 over a
    previous run's logs. Only damaged checkpoints are set aside; one of another shape stops the
    run with the differences named.
    """
    previous = previous_run(workdir)
    if not resume:
        if previous:
            raise FileExistsError(f"workdir {str(workdir)!r} already holds a run ({previous}); resume it "
                                  "(resume=True / --resume) or choose another workdir")
        return None
    restored = None
    if checkpointer.steps():
        saved = json.loads((workdir / SIGNATURE_FILE).read_text()) if (workdir / SIGNATURE_FILE).exists() else None
        problem = saved and signature_mismatch(saved, signature)
        if problem:
            raise ValueError(f"cannot resume {str(workdir)!r} with this configuration: {problem}. "
                             "Resume with the original tasks and model, or start a new workdir")
        restored = checkpointer.restore_latest(abstract_state, abstract_output())
    if restored is None and previous_run(workdir):
        raise FileNotFoundError(
            f"cannot resume {str(workdir)!r}: it holds a previous run ({previous_run(workdir)}) but no usable "
            "checkpoint, and starting again from step 0 would overwrite its metrics.jsonl and history. Its files "
            "are left as they are: train into a new workdir (or move this one's files away to start over)")
    return restored
