"""The train step runs unchanged on a data-parallel mesh (two simulated CPU devices): hard
sharing, and a mixture of experts with a parameter-level gradient method; ``fit(mesh=...)`` gives
the one-device run's history and parameters, and a checkpoint written on two devices resumes on
one (and back) as the uninterrupted run."""
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

    # fit on a mesh from the config's spec: uncertainty weighting then UPGrad at the feature level,
    # validation every epoch; the same history and parameters as on one device
    from mtl_jax.train.mesh import make_mesh
    mesh_of_two = make_mesh({"data": -1})
    assert mesh_of_two.shape["data"] == 2 and make_mesh({"data": 1}) is None
    uw_upgrad = make_weighting("uw", tasks, {}, steps_per_epoch=5, aggregator="upgrad", level="feature")
    model = hard_sharing(MLP((16,)), tasks)
    fits = [mtl.fit(model, tasks, data, validation=data, epochs=2, batch_size=8, input_key="x", optimizer=opt,
                    weighting=uw_upgrad, progress=False, mesh=mesh) for mesh in (mesh_of_two, None)]
    chex.assert_trees_all_close(jax.device_get(fits[0].state.params), fits[1].state.params, rtol=1e-5, atol=1e-6)
    chex.assert_trees_all_close(jax.device_get(fits[0].state.weighting_state), fits[1].state.weighting_state,
                                rtol=1e-5, atol=1e-6)
    for key in ("train/y/loss", "train/label/accuracy", "validation/y/rmse", "train/y/weight"):
        np.testing.assert_allclose(fits[0].history[key], fits[1].history[key], rtol=1e-5, err_msg=key)
    # a checkpoint written on two devices resumes on one, and one written on one resumes on two:
    # the run continues as the uninterrupted one-device run
    import tempfile
    for first_mesh, then_mesh in ((mesh_of_two, None), (None, mesh_of_two)):
        with tempfile.TemporaryDirectory() as workdir:
            options = dict(validation=data, batch_size=8, input_key="x", optimizer=opt, weighting=uw_upgrad,
                           progress=False, workdir=workdir, tensorboard=False, plots=False)
            mtl.fit(model, tasks, data, epochs=1, mesh=first_mesh, **options)
            resumed = mtl.fit(model, tasks, data, epochs=2, mesh=then_mesh, resume=True, **options)
        chex.assert_trees_all_close(jax.device_get(resumed.state.params), fits[1].state.params, rtol=1e-5,
                                    atol=1e-6)
        np.testing.assert_allclose(resumed.history["validation/y/rmse"], fits[1].history["validation/y/rmse"],
                                   rtol=1e-5)
        leaf = jax.tree.leaves(resumed.state.params)[0]
        assert len(leaf.sharding.device_set) == (1 if then_mesh is None else 2), (then_mesh, leaf.sharding)
    kernel = fits[0].state.params["heads_y"]["Dense_0"]["kernel"]
    assert kernel.sharding.is_fully_replicated and len(kernel.sharding.device_set) == 2
    try:
        mtl.fit(model, tasks, data, epochs=1, batch_size=7, input_key="x", progress=False, mesh=mesh_of_two)
    except ValueError as error:
        assert "does not split over the mesh's 2 data devices" in str(error), error
    else:
        raise AssertionError("an odd batch on two devices was accepted")
    print("OK")
""")


@pytest.mark.long
def test_train_step_fit_and_resume_on_a_two_device_data_mesh_match_one_device():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_a_mesh_spec_is_checked_before_anything_runs():
    import jax
    from mtl_jax.config import load_config
    from mtl_jax.experiment import check
    from mtl_jax.train.mesh import make_mesh

    assert jax.device_count() == 1
    assert make_mesh({}) is None and make_mesh(None) is None and make_mesh({"data": -1}) is None
    for spec, message in (({"model": 2}, "unknown axis"), ({"data": 64}, "64 devices asked for, 1 available"),
                          ({"data": 0}, "must be a number of devices"), ({"data": "all"}, "must be a number")):
        with pytest.raises(ValueError, match=message):
            make_mesh(spec)
    with pytest.raises(ValueError, match="devices asked for"):
        check(load_config("experiments/configs/seed_cnn.py", ["mesh.data=64"]))
