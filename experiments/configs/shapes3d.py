"""3D Shapes (``shapes3d``, TFDS; the first run downloads it): the object's shape (4 classes) and
five factors as regressions (scale, orientation, floor, wall and object hue, standardised on the
train split), the seed CNN's trunk shared by all six, equal weights.

    mtl-jax train --config experiments/configs/shapes3d.py --workdir runs/shapes3d
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "shapes3d"
    config.data = {}
    config.tasks = {name: {"weight": 1.0} for name in
                    ("shape", "scale", "orientation", "floor_hue", "wall_hue", "object_hue")}
    config.model = "seed_cnn"
    config.head_hidden = (64,)
    config.epochs = 5
    config.batch_size = 128
    config.learning_rate = 1e-3
    config.best_metric = "shape/accuracy"
    return config
