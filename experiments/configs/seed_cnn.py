"""The seed example as a config: SeedCNN, price (MSE) + 0.5 x kind (cross-entropy), Adam, 10 epochs.

    mtl-jax train --config experiments/configs/seed_cnn.py --workdir runs/seed_cnn
    mtl-jax train --config experiments/configs/seed_cnn.py --set epochs=3 --set weighting=equal ...
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "houses"
    config.data = {"train_size": 3000, "validation_size": 500, "test_size": 1000, "seed": 0}
    config.tasks = {"price": {"weight": 1.0}, "kind": {"weight": 0.5}}
    config.model = "seed_cnn"
    config.head_hidden = (64,)
    config.best_metric = "price/rmse"
    return config
