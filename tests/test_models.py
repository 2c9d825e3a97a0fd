import chex
import jax
import jax.numpy as jnp
import pytest

import mtl_jax as mtl
from conftest import init_variables
from mtl_jax.models import (MLP, Head, PixelDecoder, ResNet, SeedCNN, TextEncoder, hard_sharing,
                            param_labels, shared_params, task_branches)

TASKS = [mtl.regression("price"), mtl.regression("pos", 2), mtl.classification("kind", 3),
         mtl.multilabel("tags", 5), mtl.binary("click")]
EXPECTED = {"price": (4, 1), "pos": (4, 2), "kind": (4, 3), "tags": (4, 5), "click": (4, 1)}


@pytest.mark.parametrize("trunk,inputs,representation", [
    (MLP((16, 8)), jnp.zeros((4, 10)), (4, 8)),
    (SeedCNN(), jnp.zeros((4, 64, 64, 3), jnp.uint8), (4, 16, 16, 64)),
    (ResNet((1, 1), (8, 16)), jnp.zeros((4, 32, 32, 3)), (4, 16, 16, 16)),
    (TextEncoder(50, 16), jnp.ones((4, 7), jnp.int32), (4, 16)),
    (TextEncoder(50, 16, layers=2, num_heads=2, mlp_dim=32), jnp.ones((4, 7), jnp.int32), (4, 16)),
])
def test_every_trunk_with_every_global_head(trunk, inputs, representation):
    model = hard_sharing(trunk, TASKS, head_hidden=(8,))
    variables = init_variables(model, jax.random.PRNGKey(0), inputs)
    out = model.apply(variables, inputs)
    chex.assert_shape([out[k] for k in EXPECTED], [EXPECTED[k] for k in EXPECTED])
    chex.assert_tree_all_finite(out)
    z = model.apply(variables, inputs, method="represent")
    chex.assert_shape(z, representation)
    again = model.apply(variables, z, method="predict_from")
    chex.assert_trees_all_close(out, again)


def test_dense_heads_decode_to_the_input_resolution():
    tasks = [mtl.segmentation("parts", 4), mtl.depth("depth"), mtl.classification("kind", 3)]
    model = hard_sharing(SeedCNN(), tasks, output_size=(64, 64))
    x = jnp.zeros((2, 64, 64, 3))
    out = model.apply(init_variables(model, jax.random.PRNGKey(0), x), x)
    chex.assert_shape([out["parts"], out["depth"], out["kind"]], [(2, 64, 64, 4), (2, 64, 64, 1), (2, 3)])
    with pytest.raises(ValueError, match="output_size"):
        hard_sharing(SeedCNN(), tasks)


def test_text_encoder_ignores_padding_tokens():
    encoder = TextEncoder(20, 8, layers=1, num_heads=2, mlp_dim=16)
    tokens = jnp.array([[3, 4, 5, 0, 0]])
    variables = init_variables(encoder, jax.random.PRNGKey(0), tokens)
    short = encoder.apply(variables, tokens[:, :3])
    chex.assert_trees_all_close(encoder.apply(variables, tokens), short, atol=1e-5)


def test_task_branches_and_parameter_ownership():
    tasks = [mtl.regression("a"), mtl.classification("b", 3)]
    model = task_branches(MLP((8,)), {"a": MLP((4,)), "b": MLP((6,))}, tasks)
    x = jnp.zeros((3, 5))
    params = init_variables(model, jax.random.PRNGKey(0), x)["params"]
    assert set(params) == {"trunk", "branches_a", "branches_b", "heads_a", "heads_b"}
    labels = param_labels(model, params)
    assert set(jax.tree.leaves(labels["trunk"])) == {"shared"}
    assert set(jax.tree.leaves(labels["branches_b"])) == {"b"}
    assert set(shared_params(model, params)) == {"trunk"}
    assert params["heads_b"]["Dense_0"]["kernel"].shape == (6, 3)
    with pytest.raises(ValueError, match="not among"):
        task_branches(MLP((8,)), {"c": MLP((4,))}, tasks)


def test_models_are_hashable_so_compiled_steps_are_reused():
    a = hard_sharing(SeedCNN(), TASKS[:2])
    b = hard_sharing(SeedCNN(), TASKS[:2])
    assert a == b and hash(a) == hash(b)


def test_heads_pool_feature_maps():
    z = jnp.ones((2, 4, 4, 3))
    for pool, features in (("flatten", 48), ("mean", 3)):
        params = Head(2, pool=pool).init(jax.random.PRNGKey(0), z)["params"]
        assert params["Dense_0"]["kernel"].shape == (features, 2)
    with pytest.raises(ValueError, match="feature map"):
        PixelDecoder(1, (8, 8)).init(jax.random.PRNGKey(0), jnp.ones((2, 3)))


def test_the_mlp_scales_uint8_images_like_the_conv_trunks_and_keeps_other_integers():
    images = jax.random.randint(jax.random.PRNGKey(0), (3, 6, 6, 3), 0, 256).astype(jnp.uint8)
    mlp = MLP((8,))
    params = init_variables(mlp, jax.random.PRNGKey(1), images)
    chex.assert_trees_all_close(mlp.apply(params, images), mlp.apply(params, images.astype(jnp.float32) / 255.0),
                                rtol=1e-6, atol=1e-6)
    counts = images.astype(jnp.int32)
    chex.assert_trees_all_close(mlp.apply(params, counts), mlp.apply(params, counts.astype(jnp.float32)))
