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

from mtl_jax.names import did_you_mean


class Entry(NamedTuple):
    factory: Callable
    description: str


class Registry:
    """Names -> factories with a one-line description each."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, description: str, aliases: tuple[str, ...] = ()):
        """Registers ``name`` (the public function's name) and older or common ``aliases`` of it."""
        def decorate(factory):
            for key in (name, *aliases):
                taken = self._entries.get(self._aliases.get(key, key))
                if taken is not None and taken.factory is not factory:
                    raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._entries[name] = Entry(factory, description)
            self._aliases.update({alias: name for alias in aliases})
            return factory
        return decorate

    def canonical(self, name: str) -> str:
        """The registered name ``name`` means: itself, the name an alias stands for, or either
        spelled in another case (``UW``, ``MMoE``); unknown names are returned unchanged."""
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        folded = {key.lower(): self._aliases.get(key, key) for key in (*self._entries, *self._aliases)}
        return folded.get(str(name).lower(), name)

    def check(self, name: str) -> None:
        """Raises a KeyError naming the closest known names when ``name`` is not registered."""
        if self.canonical(name) not in self._entries:
            hint = did_you_mean(name, [*self._entries, *self._aliases])
            raise KeyError(f"unknown {self.kind} {name!r}{hint} (known: {', '.join(sorted(self._entries))})")

    def get(self, name: str) -> Callable:
        self.check(name)
        return self._entries[self.canonical(name)].factory

    def as_json(self) -> dict:
        """Names, descriptions and aliases (what :mod:`mtl_jax.catalog` ships)."""
        return {"kind": self.kind, "entries": {n: e.description for n, e in sorted(self._entries.items())},
                "aliases": dict(sorted(self._aliases.items()))}

    @classmethod
    def from_json(cls, saved: dict) -> "Registry":
        """A registry of names only (no factories): for checking names and listing them."""
        registry = cls(saved["kind"])
        registry._entries = {n: Entry(None, d) for n, d in saved["entries"].items()}
        registry._aliases = dict(saved["aliases"])
        return registry

    def describe(self) -> list[tuple[str, str]]:
        """``(name, description)`` pairs; a description ends with the name's aliases, if any."""
        also = {}
        for alias, name in self._aliases.items():
            also.setdefault(name, []).append(alias)
        return sorted((name, entry.description + (f" (also: {', '.join(sorted(also[name]))})" if name in also else ""))
                      for name, entry in self._entries.items())

    def __contains__(self, name: str) -> bool:
        return self.canonical(name) in self._entries


DATASETS = Registry("dataset")
MODELS = Registry("model")
ARCHITECTURES = Registry("architecture")
WEIGHTINGS = Registry("weighting method")
OPTIMIZERS = Registry("optimizer")
SCHEDULES = Registry("learning-rate schedule")
AGGREGATORS = Registry("aggregator")
