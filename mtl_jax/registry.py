"""Small registries: datasets, models, weighting methods and optimizers found by name.

A config names its pieces (``config.model = "seed_cnn"``, ``config.weighting = "static"``);
the runner looks them up here. Adding a method is one new file that registers one name::

    @WEIGHTINGS.register("equal", "equal weights (EW): plain summed-loss training")
    def equal(tasks):
        ...

``mtl-jax list`` prints every registry with its one-line descriptions.
"""
from __future__ import annotations

from typing import Callable, NamedTuple


class Entry(NamedTuple):
    factory: Callable
    description: str


class Registry:
    """Names -> factories with a one-line description each."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, description: str):
        def decorate(factory):
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(factory, description)
            return factory
        return decorate

    def get(self, name: str) -> Callable:
        if name not in self._entries:
            raise KeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}")
        return self._entries[name].factory

    def describe(self) -> list[tuple[str, str]]:
        return sorted((name, entry.description) for name, entry in self._entries.items())

    def __contains__(self, name: str) -> bool:
        return name in self._entries


DATASETS = Registry("dataset")
MODELS = Registry("model")
ARCHITECTURES = Registry("architecture")
WEIGHTINGS = Registry("weighting method")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("learning-rate schedule")
AGGREGATORS = Registry("aggregator")
