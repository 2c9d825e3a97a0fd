"""MultiMNIST-style pairs of real handwritten digits (``multi_digits``, mtl_jax/data/digits.py):
the seed CNN's trunk shared by the ``left`` and the ``right`` digit, equal weights.

The digits are scikit-learn's 1,797 shipped 8x8 handwritten digits (``pip install
'mtl_jax[digits]'``; nothing downloads); test pairs are made from digits no training pair uses.

    mtl-jax train --config experiments/configs/multi_digits.py --workdir runs/multi_digits
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "multi_digits"
    config.data = {"train_size": 10000, "validation_size": 2000, "test_size": 2000, "seed": 0}
    config.tasks = {"left": {"weight": 1.0}, "right": {"weight": 1.0}}
    config.model = "seed_cnn"
    config.head_hidden = (64,)
    config.epochs = 10
    config.batch_size = 64
    config.learning_rate = 1e-3
    config.best_metric = "left/accuracy"
    return config
