"""Factories cached by the values of their arguments, so that equal configurations are equal objects.

Compiled steps are cached on their pieces (model, tasks, optimizer, balancing method): a piece
made twice from the same options must be the same object, or the step compiles again.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable


def by_value(factory: Callable) -> Callable:
    """Caches ``factory`` by the values of its arguments, defaults filled in: equal options give
    the very same object (``famo(0.025) is famo(beta=0.025)``), so a compiled step keyed on it is
    reused instead of compiled again. Lists become tuples; the cache is bounded (LRU, 256)."""
    signature = inspect.signature(factory)
    cached = functools.lru_cache(maxsize=256)(factory)

    def freeze(value):
        return tuple(freeze(v) for v in value) if isinstance(value, (list, tuple)) else value

    @functools.wraps(factory)
    def make(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return cached(*(freeze(v) for v in bound.args), **{k: freeze(v) for k, v in bound.kwargs.items()})

    make.cache_clear = cached.cache_clear
    return make
