"""The registries' names without importing JAX: what ``mtl-jax list`` prints and config names are
checked against before anything heavy is imported.

The registries (:mod:`mtl_jax.registry`) fill up as the modules that define methods, models and
datasets are imported, which imports JAX, Flax and TFDS (~2 s). ``catalog.json``, shipped in
the package, holds every registry's names, aliases and one-line descriptions;
``python -m mtl_jax.catalog`` rewrites it from the live registries, and a test fails when it is
stale. Names registered by your own code (a config file that imports a module registering a
method) are found in the live registries, which that import filled.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mtl_jax.registry import Registry

CATALOG_FILE = Path(__file__).with_name("catalog.json")
# (title in `mtl-jax list`, registry variable in mtl_jax.registry, the config key naming it, its "nothing" value)
REGISTRIES = (("datasets", "DATASETS", "dataset", None), ("models", "MODELS", "model", "none"),
              ("architectures", "ARCHITECTURES", "architecture", None),
              ("weighting methods", "WEIGHTINGS", "weighting", None),
              ("aggregators", "AGGREGATORS", "aggregator", "none"), ("optimizers", "OPTIMIZERS", "optimizer", None),
              ("schedules", "SCHEDULES", "schedule", None))


def live() -> dict:
    """The catalog of the live registries, with every built-in registered (imports JAX)."""
    import mtl_jax.experiment  # noqa: F401 - registers everything
    from mtl_jax import registry

    return {title: getattr(registry, variable).as_json() for title, variable, _, _ in REGISTRIES}


def load() -> dict[str, Registry]:
    """``{title: Registry of names}`` from the shipped catalog."""
    saved = json.loads(CATALOG_FILE.read_text())
    return {title: Registry.from_json(saved[title]) for title, _, _, _ in REGISTRIES}


def listing() -> str:
    """``mtl-jax list``: every registry's names and descriptions."""
    lines = []
    for title, registry in load().items():
        lines.append(f"{title}:")
        described = registry.describe()
        width = max(len(name) for name, _ in described)
        lines += [f"  {name:<{width}}  {text}" for name, text in described]
    return "\n".join(lines)


def check_names(config) -> None:
    """Every name ``config`` gives a registry exists (a KeyError with the closest names if not),
    without importing JAX unless a name is missing from the catalog."""
    shipped = load()
    for title, variable, key, nothing in REGISTRIES:
        name = config[key]
        if name == nothing or name in shipped[title]:
            continue
        live_registry = getattr(sys.modules["mtl_jax.registry"], variable)
        if name in live_registry:  # registered by the user's own code, imported by the config file
            continue
        shipped[title].check(name)


if __name__ == "__main__":
    CATALOG_FILE.write_text(json.dumps(live(), indent=1) + "\n")
    print(f"wrote {CATALOG_FILE}")
