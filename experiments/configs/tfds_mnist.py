"""Any TFDS dataset from a config (``dataset = "tfds"``): here MNIST's ``label`` as a task named
``digit`` (its kind and 10 classes come from the feature). Give ``data.name``, ``data.input``
and, per task, the ``feature`` (default: the task's name), and ``kind`` / ``num_classes`` where
the feature does not say them.

    mtl-jax train --config experiments/configs/tfds_mnist.py --workdir runs/tfds_mnist
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "tfds"
    config.data = {"name": "mnist", "input": "image", "train_split": "train[:50000]",
                   "validation_split": "train[50000:]", "test_split": "test"}
    config.tasks = {"digit": {"feature": "label"}}
    config.model = "seed_cnn"
    config.epochs = 3
    config.batch_size = 128
    config.learning_rate = 1e-3
    config.best_metric = "digit/accuracy"
    return config
