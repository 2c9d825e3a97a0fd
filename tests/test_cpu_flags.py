"""``import mtl_jax`` switches XLA's CPU convolutions to the multi-threaded ones, only where that is safe."""
import json
import os
import subprocess
import sys

import pytest

from mtl_jax import cpu_flags

SCRIPT = """
import json, os, sys
if sys.argv[1] == "jax-first":
    import jax.numpy as jnp
    jnp.ones(1).block_until_ready()  # a backend starts before mtl_jax is imported
import jax
from jax import lax
import mtl_jax
from mtl_jax import cpu_flags
from mtl_jax.models.conv import conv_for_platform, conv_general_dilated
x, w = jax.numpy.ones((64, 32, 32, 32)), jax.numpy.ones((3, 3, 32, 64))  # the seed CNN layer (compiled only)
hlo = jax.jit(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
              ).lower(x, w).compile().as_text()
print(json.dumps({"flags": os.environ.get("XLA_FLAGS", ""), "multithreaded": cpu_flags.cpu_convolutions_multithreaded(),
                  "auto_is_mtl_jax_conv": conv_for_platform("auto") is conv_general_dilated,
                  "ynn_convolution": any("__ynn_fusion" in line and "conv_general_dilated" in line
                                         for line in hlo.splitlines())}))
"""


def _run(mode="plain", **env):
    environment = {**os.environ, "JAX_PLATFORMS": "cpu", **env}
    environment.pop("XLA_FLAGS", None) if "XLA_FLAGS" not in env else None
    environment.pop("MTL_JAX_KEEP_XLA_FLAGS", None) if "MTL_JAX_KEEP_XLA_FLAGS" not in env else None
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=environment,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


pytestmark = pytest.mark.skipif(cpu_flags._jaxlib_version() not in cpu_flags.KNOWN_JAXLIB,
                                reason="the flag is only set for jaxlib versions known to take it")


def test_importing_mtl_jax_first_makes_convolutions_multithreaded_and_auto_uses_xlas():
    result = _run(XLA_FLAGS="--xla_cpu_enable_fast_min_max=true")
    assert result["flags"].split() == ["--xla_cpu_enable_fast_min_max=true", cpu_flags.FLAG]  # appended, kept
    assert result["multithreaded"] and not result["auto_is_mtl_jax_conv"]
    assert not result["ynn_convolution"]  # XLA's own (multi-threaded) convolution


def test_without_the_flag_auto_falls_back_to_mtl_jaxs_convolution():
    for result in (_run("jax-first"), _run(MTL_JAX_KEEP_XLA_FLAGS="1"),
                   _run(XLA_FLAGS="--xla_cpu_experimental_ynn_fusion_type=+individual_convolution")):
        assert cpu_flags.FLAG not in result["flags"]
        assert not result["multithreaded"] and result["auto_is_mtl_jax_conv"]
        assert result["ynn_convolution"]  # the one-thread YNNPACK convolution
