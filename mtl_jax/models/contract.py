"""What every multi-task architecture in mtl_jax promises, and helpers to keep the promise.

An architecture is a Flax module with

* ``__call__(x, train)`` -> ``{task: prediction}``;
* ``represent(x, train)`` -> the *shared representation* ``z`` (an array or a pytree of
  arrays): everything the tasks read that depends on shared parameters;
* ``predict_from(z, train)`` -> ``{task: prediction}``; given ``{task: z}`` (one copy of ``z``
  per task) task ``t`` reads only its own copy, so the gradient with respect to copy ``t`` is
  task ``t``'s gradient alone (the feature level of the gradient methods);
* ``param_owner(name)`` -> ``"shared"`` or a task name for each top-level parameter entry,
  and ``task_names``.

*Shared* parameters are exactly those used by ``represent``; a task's parameters are used
only by its own part of ``predict_from`` and receive only its gradient. Each architecture's
docstring says what that means for it.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import flax.linen as nn

SHARED = "shared"


class Architecture(nn.Module):
    """Base of the architectures: ``__call__`` is ``predict_from(represent(x))``.

    Subclasses have a ``heads`` field (task name -> head, in task order) and define
    ``represent``, ``predict_from`` and ``param_owner``.
    """

    def __call__(self, x, train: bool = False):
        return self.predict_from(self.represent(x, train), train)

    @property
    def task_names(self) -> tuple[str, ...]:
        return tuple(self.heads)


def task_copy(z: Any, task: str, task_names: Iterable[str]) -> Any:
    """Task ``task``'s copy of ``z`` when ``z`` is ``{task: copy}``, else ``z`` itself."""
    names = set(task_names)
    if isinstance(z, Mapping) and set(z) == names:
        return z[task]
    return z


def owner_by_prefix(name: str, task_names: Iterable[str], task_prefixes: Iterable[str],
                    shared_prefixes: Iterable[str], model: str) -> str:
    """``"shared"`` for entries named by a shared prefix; the task for ``<task prefix><task>``."""
    names = tuple(task_names)
    for prefix in task_prefixes:
        if name.startswith(prefix) and name[len(prefix):] in names:
            return name[len(prefix):]
    if any(name == p or name.startswith(p) for p in shared_prefixes):
        return SHARED
    raise KeyError(f"parameter collection {name!r} belongs to no part of this {model}")
