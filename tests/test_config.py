"""Config files, command-line overrides, registries and the optimizer a config describes."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import ml_collections
import pytest

from mtl_jax import experiment  # noqa: F401 - registers every named piece
from mtl_jax.balancing import Info
from mtl_jax.config import apply_overrides, config_changes, default_config, load_config
from mtl_jax.data.catalog import HOUSES
from mtl_jax.models.catalog import build_model
from mtl_jax.models.sharing_penalties import make_penalty
from mtl_jax.registry import ARCHITECTURES, DATASETS, MODELS, OPTIMIZERS, SCHEDULES, WEIGHTINGS, Registry
from mtl_jax.train.optim import make_optimizer

SEED_CONFIG = "experiments/configs/seed_cnn.py"


def test_the_seed_config_loads_with_overrides_of_every_kind():
    config = load_config(SEED_CONFIG, ["epochs=3", "learning_rate=3e-4", "weighting=equal",
                                       "head_hidden=(128,64)", "tasks.kind.weight=1.0", "tasks.storeys.weight=0.2",
                                       "data.train_size=100", "grad_clip_norm=1"])
    assert (config.epochs, config.learning_rate, config.weighting) == (3, 3e-4, "equal")
    assert tuple(config.head_hidden) == (128, 64)
    assert config.tasks.kind.weight == 1.0 and config.tasks.storeys.weight == 0.2
    assert config.data.train_size == 100 and config.grad_clip_norm == 1.0


def test_overrides_refuse_unknown_keys_and_type_changes():
    config = default_config()
    with pytest.raises(KeyError, match="unknown config key 'epoch'; did you mean 'epochs'\? Known: .*epochs"):
        apply_overrides(config, ["epoch=3"])
    with pytest.raises(TypeError, match="learning_rate='fast'"):
        apply_overrides(config, ["learning_rate=fast"])
    with pytest.raises(ValueError, match="not key=value"):
        apply_overrides(config, ["epochs"])


def test_config_changes_lists_changed_fields():
    old = load_config(SEED_CONFIG)
    new = apply_overrides(old, ["epochs=20", "tasks.kind.weight=1.0"])
    assert config_changes(old, new) == ["epochs: 10 -> 20", "tasks.kind.weight: 0.5 -> 1.0"]
    assert config_changes(old, old) == []
    # a run written before a field existed: the field at its default is no change, any other value is
    written_before = ml_collections.ConfigDict({k: v for k, v in old.to_dict().items() if k != "mesh"})
    assert config_changes(written_before, old) == []
    assert config_changes(written_before, apply_overrides(old, ["mesh.data=2"])) == ["mesh.data: None -> 2"]


def test_missing_config_file_and_missing_get_config(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "nope.py")
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(ValueError, match="defines no get_config"):
        load_config(tmp_path / "empty.py")


def test_registries_name_the_known_entries_on_a_miss():
    with pytest.raises(KeyError, match=r"unknown model 'vgg' \(known: .*seed_cnn"):
        MODELS.get("vgg")
    assert {"static", "equal"} <= {name for name, _ in WEIGHTINGS.describe()}
    registry = Registry("thing")
    registry.register("a", "first")(len)
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("a", "again")(max)


def test_dataset_tasks_are_chosen_by_name_with_overrides():
    tasks = HOUSES.make_tasks({"price": {"weight": 2.0, "loss": "huber"}, "kind": {"metrics": ["accuracy"]}})
    assert [(t.name, t.kind, t.output_dim, t.weight) for t in tasks] == [
        ("price", "regression", 1, 2.0), ("kind", "classification", 3, 1.0)]
    assert tasks[0].loss == "huber" and tasks[1].metrics == ("accuracy",)
    with pytest.raises(KeyError, match=r"unknown task\(s\) \['age'\]"):
        HOUSES.make_tasks({"age": {}})
    with pytest.raises(ValueError, match="task 'kind': bad options"):
        HOUSES.make_tasks({"kind": {"loss": "mse"}})


def _updates(optimizer, grads, steps=1):
    params = {"w": jnp.zeros(3)}
    state = optimizer.init(params)
    for _ in range(steps):
        updates, state = optimizer.update(grads, state, params)
    return updates


def test_schedules_warm_up_then_decay_to_the_end_factor():
    _, lr = make_optimizer("sgd", 0.1, schedule="cosine", total_steps=110, warmup_steps=10, end_factor=0.1)
    np.testing.assert_allclose([lr(0), lr(5), lr(10), lr(60), lr(110)], [0.0, 0.05, 0.1, 0.055, 0.01], rtol=1e-5)
    _, lr = make_optimizer("adam", 0.1, schedule="linear", total_steps=100, end_factor=0.0)
    np.testing.assert_allclose([lr(0), lr(50), lr(100)], [0.1, 0.05, 0.0], atol=1e-7)
    _, lr = make_optimizer("adam", 0.1, schedule="exponential", decay_rate=0.5, decay_steps=10)
    np.testing.assert_allclose(lr(20), 0.025, rtol=1e-5)
    _, lr = make_optimizer("adam", 0.1)
    assert lr(0) == lr(10_000) == 0.1


def test_gradient_clipping_bounds_the_global_norm_before_the_optimizer():
    optimizer, _ = make_optimizer("sgd", 1.0, grad_clip_norm=0.5)
    updates = _updates(optimizer, {"w": jnp.array([30.0, 40.0, 0.0])})
    np.testing.assert_allclose(optax.global_norm(updates), 0.5, rtol=1e-6)
    np.testing.assert_allclose(updates["w"], [-0.3, -0.4, 0.0], rtol=1e-6)


def test_sgd_weight_decay_and_refusals():
    optimizer, _ = make_optimizer("sgd", 1.0, weight_decay=0.1)
    params = {"w": jnp.ones(3)}
    updates, _ = optimizer.update({"w": jnp.zeros(3)}, optimizer.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1, rtol=1e-6)
    with pytest.raises(ValueError, match="use optimizer 'adamw'"):
        make_optimizer("adam", 1e-3, weight_decay=0.1)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        make_optimizer("adam", 0.0)
    with pytest.raises(KeyError, match="unknown learning-rate schedule 'cyclic'"):
        make_optimizer("adam", 1e-3, schedule="cyclic")


@pytest.mark.parametrize("path", sorted(p for p in Path("experiments/configs").glob("*.py")
                                         if not p.name.startswith("compare_")), ids=lambda p: p.stem)
def test_every_shipped_config_resolves_every_name(path):  # compare configs: tests/test_compare.py
    config = load_config(path)
    spec, tasks = experiment.check(config)
    for registry, name in ((OPTIMIZERS, config.optimizer), (SCHEDULES, config.schedule)):
        registry.get(name)
    build_model(config.model, tasks, trunk_kwargs=dict(config.model_kwargs), head_hidden=config.head_hidden,
                pool=config.pool, output_size=spec.output_size, architecture=config.architecture,
                architecture_kwargs=dict(config.architecture_kwargs))
    make_penalty(config.penalty, config.penalty_weight)
    weighting = experiment.make_weighting(config.weighting, tasks, dict(config.weighting_kwargs),
                                          steps_per_epoch=10, log=config.log_losses, aggregator=config.aggregator,
                                          aggregator_kwargs=dict(config.aggregator_kwargs),
                                          level=config.gradient_level, diagnostics=config.gradient_diagnostics)
    info = Info(jnp.ones(len(tasks)), jnp.eye(len(tasks)) if weighting.needs.endswith("_gramian") else None)
    weights, _ = weighting.update(info, weighting.init(len(tasks)), jax.random.PRNGKey(0))
    assert weights.shape == (len(tasks),)


@pytest.mark.long
def test_a_weighting_config_trains_end_to_end(tmp_path, data_dir):
    config = load_config("experiments/configs/houses_uw.py", [
        "plots=False", "data.train_size=96", "data.validation_size=40", "data.test_size=40", "epochs=1", "batch_size=32"])
    results = experiment.train_and_evaluate(config, tmp_path, progress=False, data_dir=data_dir)
    assert set(results["final"]) >= {"price/rmse", "windows/rmse", "kind/accuracy", "storeys/accuracy",
                                     "roof_colour/accuracy"}
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["train/windows/weight"][0] < 0.5  # UW: 0.5 e^{-s}, s rising on the large windows loss


def test_a_conflict_config_trains_end_to_end_at_the_parameter_level(tmp_path, data_dir):
    config = load_config("experiments/configs/houses_conflict.py", [
        "data.train_size=64", "data.validation_size=32", "data.test_size=32", "epochs=1", "batch_size=32",
        "gradient_level=parameter", "aggregator=cagrad", "aggregator_kwargs.c=0.5", "affinity_every_steps=1"])
    results = experiment.train_and_evaluate(config, tmp_path, progress=False, data_dir=data_dir)
    assert np.isfinite(results["final"]["price/rmse"])
    history = json.loads((tmp_path / "history.json").read_text())
    assert np.asarray(history["train/gradient_cosines"]).shape == (1, 5, 5)
    affinity = json.loads((tmp_path / "affinity.json").read_text())
    assert affinity["measurements"] == 2 and np.asarray(affinity["affinity"]).shape == (5, 5)
    assert (tmp_path / "gradient_conflict.png").exists() and (tmp_path / "affinity.png").exists()


def test_the_convolution_path_is_switched_by_config():
    from mtl_jax.models.catalog import build_model
    from mtl_jax.tasks import classification

    for path in ("auto", "fast", "native"):
        config = load_config(SEED_CONFIG, [f"model_kwargs.conv={path}"])
        model = build_model(config.model, (classification("kind", 3),), trunk_kwargs=dict(config.model_kwargs))
        assert model.trunk.conv == path
    config = load_config(SEED_CONFIG, ["model_kwargs.conv=cudnn"])
    model = build_model(config.model, (classification("kind", 3),), trunk_kwargs=dict(config.model_kwargs))
    with pytest.raises(ValueError, match="conv must be one of"):
        model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)))


def test_task_specific_branches_are_selectable_from_a_config():
    from mtl_jax.models import param_labels
    from mtl_jax.tasks import classification, regression, segmentation

    config = load_config(SEED_CONFIG, ["architecture=branches", "architecture_kwargs.branch_features=[16, 8]"])
    tasks = (regression("price"), classification("kind", 3))
    model = build_model(config.model, tasks, trunk_kwargs=dict(config.model_kwargs), head_hidden=config.head_hidden,
                        pool=config.pool, architecture=config.architecture,
                        architecture_kwargs=dict(config.architecture_kwargs))
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 64, 64, 3)))["params"]
    assert set(params) == {"trunk", "branches_price", "branches_kind", "heads_price", "heads_kind"}
    assert params["branches_kind"]["Dense_1"]["kernel"].shape == (16, 8)
    labels = param_labels(model, params)
    assert set(jax.tree.leaves(labels["branches_kind"])) == {"kind"} and set(jax.tree.leaves(labels["trunk"])) == {
        "shared"}
    only_price = build_model(config.model, tasks, architecture="branches", architecture_kwargs={"branch_tasks": ["price"]})
    assert set(only_price.init(jax.random.PRNGKey(0), jnp.zeros((2, 64, 64, 3)))["params"]) == {
        "trunk", "branches_price", "heads_price", "heads_kind"}
    with pytest.raises(ValueError, match=r"branch_tasks \['prize'\] are not tasks"):
        build_model(config.model, tasks, architecture="branches", architecture_kwargs={"branch_tasks": ["prize"]})
    with pytest.raises(ValueError, match=r"per-pixel tasks \['parts'\]"):
        build_model(config.model, (segmentation("parts", 4),), architecture="branches",
                    architecture_kwargs={"branch_tasks": ["parts"]}, output_size=(64, 64))
    assert "branches" in dict(ARCHITECTURES.describe())


def test_flax_style_config_flags_become_overrides():
    from mtl_jax.cli import config_flags

    argv = ["train", "--config=c.py", "--config.epochs=3", "--config.tasks.kind.weight", "0.5", "--set", "seed=1"]
    assert config_flags(argv) == ["train", "--config=c.py", "--set", "epochs=3", "--set", "tasks.kind.weight=0.5",
                                  "--set", "seed=1"]
    with pytest.raises(ValueError, match="needs a value"):
        config_flags(["train", "--config.epochs"])


def test_the_config_command_prints_every_field_with_its_meaning_and_changes(capsys):
    from mtl_jax.cli import run

    assert run(["config", "--config", "experiments/configs/seed_cnn.py", "--config.epochs=3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "epochs = 3  (default: 10)" in out
    assert any(line.startswith("gradient_level = 'feature'  # where gradient methods") and "parameter (exact" in line
               for line in out)  # a comment continued on the next line of default_config
    flat = [line.split(" = ")[0] for line in out if " = " in line]
    for key in default_config().keys():
        assert key in flat or f"{key}:" in " ".join(out), key


def test_an_unknown_key_suggests_the_closest_ones():
    with pytest.raises(KeyError, match="did you mean 'learning_rate' or 'affinity_learning_rate'"):
        apply_overrides(default_config(), ["lerning_rate=0.1"])
    with pytest.raises(KeyError, match="unknown config key 'zzz'. Known:"):
        apply_overrides(default_config(), ["zzz=1"])


def test_misspelt_data_options_and_tasks_are_named_before_any_data_load(tmp_path):
    seed_config = "experiments/configs/seed_cnn.py"
    config = load_config(seed_config, ["data.train_sise=100"])
    with pytest.raises(KeyError, match="unknown data option 'train_sise'; did you mean 'train_size'"):
        experiment.build(config, data_dir=tmp_path)
    config = load_config(seed_config, ["tasks.prise.weight=1.0"])
    with pytest.raises(KeyError, match="unknown task.*'prise'.*did you mean 'price'"):
        experiment.build(config, data_dir=tmp_path)
    assert not any(tmp_path.iterdir())  # nothing generated or downloaded


def test_configs_stream_generated_datasets_unless_in_memory_is_asked(data_dir):
    """Nothing reads a whole split into memory by default: a config's generated dataset is a
    record source per split; data.in_memory=True gives arrays, and both give the same batches."""
    from mtl_jax.data import batches
    from mtl_jax.data.sources import is_record_source

    sizes = ["data.train_size=40", "data.validation_size=16", "data.test_size=16"]
    streamed = experiment.build(load_config(SEED_CONFIG, sizes), data_dir)
    assert all(is_record_source(split) for split in streamed.data.values())
    in_memory = experiment.build(load_config(SEED_CONFIG, [*sizes, "data.in_memory=True"]), data_dir)
    assert all(isinstance(split, dict) for split in in_memory.data.values())
    for a, b in zip(batches(streamed.data["train"], 16, seed=3, epoch=1),
                    batches(in_memory.data["train"], 16, seed=3, epoch=1)):
        for key in ("image", "price", "kind", "_valid"):
            np.testing.assert_array_equal(a[key], b[key])
            assert a[key].dtype == b[key].dtype, key
    assert experiment.loader_options(DATASETS.get("arrays"), {"train": "x.npz"}) == {"train": "x.npz"}
