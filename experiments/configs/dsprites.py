"""dSprites (``dsprites``, TFDS; the first run downloads it): one shape classification and four
regressions (scale, orientation, x and y position, standardised on the train split) from one
64x64 sprite, the seed CNN's trunk shared by all five, equal weights.

    mtl-jax train --config experiments/configs/dsprites.py --workdir runs/dsprites
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "dsprites"
    config.data = {}
    config.tasks = {name: {"weight": 1.0} for name in ("shape", "scale", "orientation", "x_position", "y_position")}
    config.model = "seed_cnn"
    config.head_hidden = (64,)
    config.epochs = 5
    config.batch_size = 128
    config.learning_rate = 1e-3
    config.best_metric = "shape/accuracy"
    return config
