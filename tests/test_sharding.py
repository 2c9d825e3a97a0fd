"""The train step runs unchanged on a data-parallel mesh (two simulated CPU devices): hard
sharing, and a mixture of experts with a parameter-level gradient method."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax, numpy as np, optax, chex
    from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
    import mtl_jax as mtl
    from mtl_jax.data import batches
    from mtl_jax.experiment import make_weighting
    from mtl_jax.models import MLP, hard_sharing
    from mtl_jax.models.experts import mmoe
    from mtl_jax.train import create_train_state, make_train_step
    from mtl_jax.weighting import static

    assert jax.device_count() == 2
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(40, 6)).astype(np.float32), "y": rng.normal(size=40).astype(np.float32),
            "label": rng.integers(0, 3, 40).astype(np.int32)}
    tasks = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
    opt = optax.adam(1e-2)
    upgrad = make_weighting("equal", tasks, {}, steps_per_epoch=5, aggregator="upgrad", level="parameter")
    # hard sharing with static weights, and a mixture of experts with the parameter-level Gramian
    # (UPGrad) on one step: the sharding rules differ only by the parameters' names and shapes.
    cases = [(hard_sharing(MLP((16,)), tasks), static([1.0, 0.5])), (mmoe(tasks, num_experts=2), upgrad)]
    mesh = Mesh(np.array(jax.devices()), ("data",), axis_types=(AxisType.Auto,))
    by_data = lambda b: jax.device_put(b, NamedSharding(mesh, P("data")))
    replicated = lambda s: jax.device_put(s, NamedSharding(mesh, P()))
    for model, weighting in cases:
        step = make_train_step(model, tasks, opt, weighting, "x")

        def run(place_batch, place_state):
            state = place_state(create_train_state(model, tasks, opt, weighting, data["x"][:2], seed=0))
            for batch in batches(data, 8, seed=0):
                state, out = step(state, place_batch(batch))
            return jax.device_get(state.params)

        sharded = run(by_data, replicated)
        single = run(lambda b: b, lambda s: s)
        chex.assert_trees_all_close(sharded, single, rtol=1e-5, atol=1e-6)
    print("OK")
""")


@pytest.mark.long
def test_train_step_on_a_two_device_data_mesh_matches_one_device():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
