"""MultiMNIST (``multi_mnist``, Sener & Koltun 2018, from TFDS ``mnist``; the first run downloads
it): two overlapping digits per 36x36 image, the seed CNN's trunk shared by ``left`` and
``right``, equal weights. The offline counterpart is ``experiments/configs/multi_digits.py``.

    mtl-jax train --config experiments/configs/multi_mnist.py --workdir runs/multi_mnist
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "multi_mnist"
    config.data = {}
    config.tasks = {"left": {"weight": 1.0}, "right": {"weight": 1.0}}
    config.model = "seed_cnn"
    config.head_hidden = (64,)
    config.epochs = 10
    config.batch_size = 128
    config.learning_rate = 1e-3
    config.best_metric = "left/accuracy"
    return config
