"""XLA CPU flags mtl_jax sets at import: multi-threaded convolutions.

jaxlib 0.10-0.11 hands CPU convolutions to YNNPACK by default, which runs each convolution
on one thread: on a 2-core machine the seed CNN's 32 -> 64 layer takes 19 ms forward where
XLA's own (Eigen) convolution takes 9.6 ms on both cores, and 91 ms for the filter gradient
against 18 ms. ``import mtl_jax`` therefore appends

    --xla_cpu_experimental_ynn_fusion_type=-individual_convolution

to ``XLA_FLAGS`` (YNNPACK keeps its dots, elementwise and reduction fusions), when

* jaxlib is a version known to take the flag (:data:`KNOWN_JAXLIB`; an unknown flag value
  stops XLA at start-up, so other versions are left alone);
* no JAX backend has started yet (flags are read once, when the first backend starts);
* ``XLA_FLAGS`` does not already choose ``xla_cpu_experimental_ynn_fusion_type``;
* ``MTL_JAX_KEEP_XLA_FLAGS`` is not set to ``1``.

The flag only affects the CPU backend. :func:`cpu_convolutions_multithreaded` tells the
convolution code (:mod:`mtl_jax.models.conv`) which CPU path is the fast one. Measured in
``benchmarks/conv_speed.py``.
"""
from __future__ import annotations

import os

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
KNOWN_JAXLIB = ((0, 10), (0, 11))
_applied: bool | None = None


def _jaxlib_version() -> tuple[int, int]:
    import jaxlib

    major, minor = jaxlib.__version__.split(".")[:2]
    return int(major), int(minor)


def _backends_started() -> bool:
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without the query: assume the worst
        return True


def apply() -> bool:
    """Adds :data:`FLAG` to ``XLA_FLAGS`` where that is safe and wanted; returns whether it is in effect."""
    global _applied
    if _applied is None:
        flags = os.environ.get("XLA_FLAGS", "")
        if FLAG in flags.split():
            _applied = True
        elif (os.environ.get("MTL_JAX_KEEP_XLA_FLAGS") == "1" or "xla_cpu_experimental_ynn_fusion_type" in flags
              or _jaxlib_version() not in KNOWN_JAXLIB or _backends_started()):
            _applied = False
        else:
            os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
            _applied = True
    return _applied


def cpu_convolutions_multithreaded() -> bool:
    """Whether this process's XLA CPU convolutions are XLA's multi-threaded ones (the flag took effect)."""
    return apply()
