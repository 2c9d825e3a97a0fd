import os

import numpy as np
import pytest

# Tests never touch the user's cache; the session's data live in a temporary folder.
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tiny_houses(data_dir):
    from mtl_jax.data import load_houses

    return load_houses(train_size=96, validation_size=40, test_size=40, seed=0, data_dir=data_dir)


def toy_regression_classification(n=64, seed=0, features=8):
    """A learnable two-task problem on vectors: a linear target and a 3-class label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x[:, :2] @ np.array([1.5, -2.0])).astype(np.float32)
    label = np.digitize(x[:, 2] + 0.5 * x[:, 3], [-0.5, 0.5]).astype(np.int32)
    return {"x": x, "y": y, "label": label}
