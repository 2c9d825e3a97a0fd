import numpy as np
import pytest

import mtl_jax as mtl
from mtl_jax.models import MLP, hard_sharing

from conftest import toy_regression_classification

TASKS = (mtl.regression("y"), mtl.classification("label", 3))
MODEL = hard_sharing(MLP((8,)), TASKS)


def _fit(data, tasks=TASKS, model=MODEL, **kwargs):
    return mtl.fit(model, tasks, data, epochs=1, batch_size=8, input_key="x", progress=False, **kwargs)


def test_missing_target_key_names_task_and_key():
    data = toy_regression_classification(16)
    del data["label"]
    with pytest.raises(KeyError, match="task 'label' needs target key 'label'"):
        _fit(data)


def test_label_out_of_range_is_refused_with_the_range():
    data = toy_regression_classification(16)
    data["label"][3] = 3
    with pytest.raises(ValueError, match=r"task 'label': 1 label\(s\) in 'label' outside \[0, 3\)"):
        _fit(data)
    data["label"] = data["label"].astype(np.float32)
    with pytest.raises(ValueError, match="integer labels"):
        _fit(data)


def test_binary_labels_must_be_zero_or_one():
    data = toy_regression_classification(16)
    data["click"] = np.full(16, 2.0, np.float32)
    tasks = TASKS + (mtl.binary("click"),)
    with pytest.raises(ValueError, match="must be 0 or 1"):
        _fit(data, tasks, hard_sharing(MLP((8,)), tasks))


def test_unknown_task_and_duplicate_tasks_are_refused():
    data = toy_regression_classification(16)
    data["extra"] = data["y"]
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['extra'\]"):
        _fit(data, TASKS + (mtl.regression("extra"),))
    with pytest.raises(ValueError, match="repeated"):
        _fit(data, TASKS + (mtl.regression("y"),))


def test_non_finite_inputs_are_refused():
    data = toy_regression_classification(16)
    data["x"][2, 1] = np.inf
    with pytest.raises(ValueError, match=r"input 'x' has non-finite values in 1 example"):
        _fit(data)


def test_wrong_target_shape_and_mismatched_lengths():
    data = toy_regression_classification(16)
    data["y"] = data["y"][:, None].repeat(2, 1)
    with pytest.raises(ValueError, match=r"expects target 'y' of shape \(N,\)"):
        _fit(data)
    data = toy_regression_classification(16)
    data["y"] = data["y"][:10]
    with pytest.raises(ValueError, match="disagree on the number of examples"):
        _fit(data)


def test_wrong_input_shape_for_trained_parameters():
    data = toy_regression_classification(16)
    state, _ = _fit(data)
    with pytest.raises(ValueError, match=r"inputs of shape \(N, 5\) \(N examples\) do not fit"):
        mtl.predict(MODEL, TASKS, state.params, data["x"][:, :5])
    bad = dict(data, x=data["x"][:, :5])
    with pytest.raises(ValueError, match="do not fit"):
        mtl.evaluate(MODEL, TASKS, state.params, bad, input_key="x")
    with pytest.raises(ValueError, match="validation inputs of shape"):
        _fit(data, validation=bad)


def test_inputs_of_the_wrong_rank_name_what_the_trunk_takes():
    """A conv trunk on 3-d arrays, a text trunk on 3-d ids: the error gives the inputs' shape and the
    trunk's expected form, not JAX's convolution or Flax's parameter error alone."""
    from mtl_jax.models import SeedCNN, TextEncoder

    tasks = (mtl.regression("y"),)
    images = {"x": np.zeros((8, 16, 16), np.float32), "y": np.zeros(8, np.float32)}
    with pytest.raises(ValueError, match=r"train inputs of shape \(N, 16, 16\) \(N examples\) do not fit the "
                                         r"model \(it takes \(N, H, W, C\) images\)"):
        _fit(images, tasks, hard_sharing(SeedCNN(), tasks))
    state, _ = _fit({**images, "x": images["x"][..., None]}, tasks, hard_sharing(SeedCNN(), tasks))
    with pytest.raises(ValueError, match=r"\(N, 16, 16\) \(N examples\) do not fit the model's parameters "
                                         r"\(it takes \(N, H, W, C\) images\)"):
        mtl.predict(hard_sharing(SeedCNN(), tasks), tasks, state.params, images["x"])
    text = {"x": np.ones((8, 4, 2), np.int32), "y": np.zeros(8, np.float32)}
    with pytest.raises(ValueError, match=r"it takes \(N, L\) token ids"):
        _fit(text, tasks, hard_sharing(TextEncoder(vocab_size=10), tasks))


def test_mask_shape_must_prefix_the_target():
    data = toy_regression_classification(16)
    data["y_mask"] = np.ones((16, 2))
    with pytest.raises(ValueError, match="mask 'y_mask'"):
        _fit(data)


def test_ids_outside_an_embedding_table_are_refused_by_name():
    import optax

    import mtl_jax as mtl
    from mtl_jax.models import FieldEmbedding, TextEncoder, hard_sharing, mmoe

    tasks = (mtl.binary("click"),)
    rng = np.random.default_rng(0)
    ids = np.stack([rng.integers(0, 5, 16), rng.integers(0, 3, 16)], axis=1).astype(np.int32)
    data = {"fields": ids, "click": rng.integers(0, 2, 16).astype(np.int32)}
    model = mmoe(tasks, num_experts=2, encoder=FieldEmbedding((5, 3), embed_dim=4))
    state, _ = mtl.fit(model, tasks, data, epochs=1, batch_size=8, input_key="fields", progress=False,
                       optimizer=optax.sgd(0.1))
    bad = dict(data, fields=ids.copy())
    bad["fields"][3, 1] = 3
    with pytest.raises(ValueError, match=r"categorical field 1 has ids in \[0, 3\] but its embedding table has 3 rows"):
        mtl.fit(model, tasks, bad, epochs=1, batch_size=8, input_key="fields", progress=False)
    with pytest.raises(ValueError, match="categorical field 1"):
        mtl.predict(model, tasks, state.params, bad["fields"])
    text = hard_sharing(TextEncoder(vocab_size=10, embed_dim=4), tasks)
    with pytest.raises(ValueError, match="token ids in \\[0, 12\\] do not fit the vocabulary of 10"):
        mtl.fit(text, tasks, {"tokens": np.array([[1, 12], [3, 0]]), "click": np.array([0, 1])}, epochs=1,
                batch_size=2, input_key="tokens", progress=False)
