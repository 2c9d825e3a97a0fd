"""Training on a device mesh (eight simulated CPU devices): ``fit(mesh=...)``, with the state
replicated or FSDP-sharded, gives the one-device run's history, parameters and method state for
plain training, a loss weighting chained with an aggregator at the feature level and an
aggregator at the parameter level; a checkpoint written on 8 devices resumes on one (and back)
as the uninterrupted run; mesh specs are checked."""
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os
    # 8 simulated devices; compiled without LLVM's optimisations, as the suite's in-process programs
    # are (tests/conftest.py): the same mathematics, a fraction of the compile time
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
    import tempfile
    import jax, numpy as np, optax, chex
    from jax.sharding import PartitionSpec as P
    import mtl_jax as mtl
    from mtl_jax.experiment import make_weighting
    from mtl_jax.models import MLP, hard_sharing
    from mtl_jax.models.experts import mmoe
    from mtl_jax.train.mesh import make_mesh, state_shardings
    from mtl_jax.weighting import static

    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(40, 6)).astype(np.float32), "y": rng.normal(size=40).astype(np.float32),
            "label": rng.integers(0, 3, 40).astype(np.int32)}
    tasks = (mtl.regression("y"), mtl.classification("label", 3, weight=0.5))
    opt = optax.adam(1e-2)
    every = make_mesh({"data": -1})
    fsdp = make_mesh({"data": 2, "fsdp": 4})
    assert dict(every.shape) == {"data": 8} and dict(fsdp.shape) == {"data": 2, "fsdp": 4}
    assert make_mesh({"data": 1}) is None and dict(make_mesh({"data": -1, "fsdp": 2}).shape) == {"data": 4, "fsdp": 2}
    # plain training, uncertainty weighting chained with UPGrad at the feature level, and UPGrad at
    # the parameter level on a mixture of experts; with validation every epoch
    hard = hard_sharing(MLP((64,)), tasks)
    cases = {"plain": (hard, static([1.0, 0.5])),
             "uw+upgrad/feature": (hard, make_weighting("uw", tasks, {}, steps_per_epoch=5, aggregator="upgrad",
                                                        level="feature")),
             "upgrad/parameter": (mmoe(tasks, num_experts=2, expert_features=(64,), tower_hidden=(8,)),
                                  make_weighting("equal", tasks, {}, steps_per_epoch=5, aggregator="upgrad",
                                                 level="parameter"))}
    # 13 validation rows: the last batch of 5 is padded to 8 rows, one per device
    options = dict(validation={k: v[:13] for k, v in data.items()}, batch_size=8, input_key="x", optimizer=opt, progress=False, fsdp_min_size=256)
    single = {}
    for name, (model, weighting) in cases.items():
        single[name] = one = mtl.fit(model, tasks, data, epochs=2, weighting=weighting, **options)
        # the FSDP mesh for every method (it replicates the small arrays and splits the data over
        # both axes); all 8 devices data-parallel for the composed method
        for mesh in ((every, fsdp) if name == "uw+upgrad/feature" else (fsdp,)):
            run = mtl.fit(model, tasks, data, epochs=2, weighting=weighting, mesh=mesh, **options)
            where = f"{name} on {dict(mesh.shape)}"
            # the state ends with the layout it started with, so every step ran one compiled program
            layout, rule = jax.tree.map(lambda a: a.sharding, run.state), state_shardings(mesh, run.state, 256)
            moved = [(jax.tree_util.keystr(p), x.spec, y.spec) for (p, x), y in
                     zip(jax.tree_util.tree_flatten_with_path(layout)[0], jax.tree.leaves(rule)) if x != y]
            assert not moved, (where, moved[:3])
            chex.assert_trees_all_close(jax.device_get(run.state.params), one.state.params, rtol=1e-5, atol=1e-6)
            chex.assert_trees_all_close(jax.device_get(run.state.weighting_state), one.state.weighting_state,
                                        rtol=1e-5, atol=1e-6)
            for key in ("train/y/loss", "train/label/accuracy", "validation/y/rmse", "validation/label/accuracy",
                        "train/y/weight"):
                np.testing.assert_allclose(run.history[key], one.history[key], rtol=1e-5, err_msg=f"{where} {key}")
            for leaf in jax.tree.leaves(run.state):
                assert len(leaf.sharding.device_set) == 8, where
            big = [(p, leaf) for p, leaf in jax.tree_util.tree_flatten_with_path(run.state.params)[0] if leaf.size >= 256]
            assert big, name
            for path, leaf in big:  # split over fsdp on the FSDP mesh (and so their Adam moments), else replicated
                split = leaf.sharding.spec != P() and "fsdp" in leaf.sharding.spec
                assert split == (mesh is fsdp), (where, jax.tree_util.keystr(path), leaf.sharding.spec)
            moments = [leaf for leaf in jax.tree.leaves(run.state.opt_state) if leaf.size >= 256]
            assert moments and all(("fsdp" in leaf.sharding.spec) == (mesh is fsdp) for leaf in moments), where

    # evaluation and prediction on a mesh (batches split over its devices, the last one padded) are one device's
    model, params, valid = cases["plain"][0], single["plain"].state.params, options["validation"]
    alone = mtl.evaluate(model, tasks, params, valid, batch_size=8, input_key="x")
    alone_predicted = mtl.predict(model, tasks, params, valid["x"], batch_size=8)
    assert len(alone_predicted["y"]) == 13
    for mesh in (every, fsdp):
        on_mesh = mtl.evaluate(model, tasks, params, valid, batch_size=8, input_key="x", mesh=mesh)
        for key in alone:
            np.testing.assert_allclose(on_mesh[key], alone[key], rtol=1e-5, err_msg=f"evaluate {key}")
        predicted = mtl.predict(model, tasks, params, valid["x"], batch_size=8, mesh=mesh)  # 8 + 5 padded rows
        chex.assert_trees_all_close(predicted, alone_predicted, rtol=1e-5, atol=1e-6)

    # a checkpoint written on 8 devices (FSDP) resumes on one (and so on any count: a restored
    # state is read onto one device, then placed): the run continues as the uninterrupted run
    model, weighting = cases["uw+upgrad/feature"]
    for first_mesh, then_mesh in ((fsdp, None),):
        with tempfile.TemporaryDirectory() as workdir:
            saving = dict(options, weighting=weighting, workdir=workdir, tensorboard=False, plots=False)
            mtl.fit(model, tasks, data, epochs=1, mesh=first_mesh, **saving)
            resumed = mtl.fit(model, tasks, data, epochs=2, mesh=then_mesh, resume=True, **saving)
        one = single["uw+upgrad/feature"]
        chex.assert_trees_all_close(jax.device_get(resumed.state.params), one.state.params, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(resumed.history["validation/y/rmse"], one.history["validation/y/rmse"], rtol=1e-5)
        leaf = jax.tree.leaves(resumed.state.params)[0]
        assert len(leaf.sharding.device_set) == (1 if then_mesh is None else 8), (then_mesh, leaf.sharding)
    try:
        mtl.fit(model, tasks, data, epochs=1, batch_size=12, input_key="x", progress=False, mesh=every)
    except ValueError as error:
        assert "does not split over the mesh's 8 devices" in str(error), error
    else:
        raise AssertionError("a batch of 12 on 8 devices was accepted")
    print("OK")
""")


@pytest.mark.long
def test_fit_on_eight_devices_replicated_or_fsdp_matches_one_device_and_resumes_across_device_counts():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_a_mesh_spec_is_checked_before_anything_runs():
    import jax

    from mtl_jax.config import load_config
    from mtl_jax.experiment import check
    from mtl_jax.train.mesh import make_mesh

    assert jax.device_count() == 1
    assert make_mesh({}) is None and make_mesh(None) is None and make_mesh({"data": -1}) is None
    assert make_mesh({"data": -1, "fsdp": 1}) is None
    for spec, message in (({"model": 2}, "unknown axis"), ({"data": 64}, "asks for 64 devices, 1 available"),
                          ({"data": 2, "fsdp": -1}, "needs a multiple of 2 devices, 1 available"), ({"data": -1, "fsdp": -1}, "at most one"),
                          ({"data": 0}, "must be a number of devices"), ({"data": "all"}, "must be a number")):
        with pytest.raises(ValueError, match=message):
            make_mesh(spec)
    with pytest.raises(ValueError, match="asks for 64 devices"):
        check(load_config("experiments/configs/seed_cnn.py", ["mesh.data=64"]))
    with pytest.raises(ValueError, match="fsdp_min_size"):
        check(load_config("experiments/configs/seed_cnn.py", ["fsdp_min_size=0"]))
    # a run trained on 8 devices is evaluated and predicted from (mtl-jax eval, predict) on the devices here
    from mtl_jax.experiment import mesh_here

    assert mesh_here(load_config("experiments/configs/seed_cnn.py", ["mesh.data=8"])) == {"data": -1}
    assert mesh_here(load_config("experiments/configs/seed_cnn.py", ["mesh.data=1"])) == {"data": 1}


def test_a_process_reads_the_one_block_of_rows_its_devices_hold():
    """Per-process input: the rows a process's devices hold are block ``index`` of ``count`` equal
    blocks, which ``batches(..., shard=(index, count))`` reads; anything else is refused by name."""
    from mtl_jax.train.mesh import process_shard, shard_of

    assert shard_of([(8, 12), (12, 16)], 32) == (1, 4)  # devices 2 and 3 of 8: the second quarter
    assert shard_of([(12, 16), (8, 12), (8, 12)], 32) == (1, 4)  # in any order, replicas counted once
    assert shard_of([(0, 32)], 32) == (0, 1)
    for blocks in ([(0, 4), (8, 12)], [(4, 12)], [(0, 12)]):  # a gap; not aligned; not an even split
        with pytest.raises(ValueError, match="not one block of an even split"):
            shard_of(blocks, 32)
    assert process_shard(None, 32) == (0, 1)  # one process reads every row
