"""Faster CPU convolutions, on request: ``mtl_jax.cpu.enable_fast_convolutions()``.

jaxlib 0.10-0.11 hands CPU convolutions to YNNPACK by default, which runs each convolution
on one thread: on a 2-core machine the seed CNN's 32 -> 64 layer takes 19 ms forward where
XLA's own (Eigen) convolution takes 9.6 ms on both cores, and 91 ms for the filter gradient
against 18 ms. :func:`enable_fast_convolutions` appends

    --xla_cpu_experimental_ynn_fusion_type=-individual_convolution

to ``XLA_FLAGS`` (YNNPACK keeps its dots, elementwise and reduction fusions), when

* jaxlib is a version known to take the flag (:data:`KNOWN_JAXLIB`; an unknown flag value
  stops XLA at start-up, so other versions are left alone);
* no JAX backend has started yet (flags are read once, when the first backend starts);
* ``XLA_FLAGS`` does not already choose ``xla_cpu_experimental_ynn_fusion_type``;
* ``MTL_JAX_KEEP_XLA_FLAGS`` is not set to ``1``.

``import mtl_jax`` changes no environment variable and no JAX setting: the ``mtl-jax``
command, ``make demo`` and the test suite call this first thing; a program of your own calls
it before it uses JAX (or sets the flag in ``XLA_FLAGS`` itself). The flag only affects the
CPU backend. :func:`fast_convolutions_enabled` says whether the flag is in effect, and with it
which convolution ``conv="auto"`` uses on CPU (:mod:`mtl_jax.models.conv`): XLA's own when it
is, mtl_jax's otherwise. The choice is written into each run's ``run_signature.json`` and a
resume with the other one is refused, so a resumed run computes exactly what it would have.
Measured in ``benchmarks/conv_speed.py``.
"""
from __future__ import annotations

import os

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
KNOWN_JAXLIB = ((0, 10), (0, 11))


def _jaxlib_version() -> tuple[int, int]:
    import jaxlib

    major, minor = jaxlib.__version__.split(".")[:2]
    return int(major), int(minor)


def _backends_started() -> bool:
    import sys

    if "jax" not in sys.modules:  # nothing can have started a backend
        return False
    try:
        from jax._src import xla_bridge
        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without the query: assume the worst
        return True


def enable_fast_convolutions() -> bool:
    """Adds :data:`FLAG` to ``XLA_FLAGS`` where that is safe and wanted (see the module doc);
    returns whether it is in effect. Call it before JAX starts a backend."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags.split():
        return True
    if (os.environ.get("MTL_JAX_KEEP_XLA_FLAGS") == "1" or "xla_cpu_experimental_ynn_fusion_type" in flags
            or _jaxlib_version() not in KNOWN_JAXLIB or _backends_started()):
        return False
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True


def fast_convolutions_enabled() -> bool:
    """Whether XLA's CPU convolutions are its multi-threaded ones in this process (:data:`FLAG`
    was in ``XLA_FLAGS`` when the backend started; set after that, it has no effect)."""
    return FLAG in os.environ.get("XLA_FLAGS", "").split()
