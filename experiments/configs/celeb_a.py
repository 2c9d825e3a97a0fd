"""CelebA (``celeb_a``, TFDS; its files are placed by hand first, as TFDS's catalog says): the 40
binary face attributes as 40 tasks (Sener & Koltun 2018's large-T benchmark) on 64x64 faces, a
small ResNet trunk shared by all of them, equal weights. The large-T case of every weighting and
aggregation method: e.g. ``--config.aggregator=upgrad`` or ``--config.weighting=uw``.

    mtl-jax train --config experiments/configs/celeb_a.py --workdir runs/celeb_a
"""
from mtl_jax.config import default_config
from mtl_jax.data.tfds_recipes import CELEB_A_ATTRIBUTES


def get_config():
    config = default_config()
    config.dataset = "celeb_a"
    config.data = {"image_size": (64, 64)}
    config.tasks = {name: {"weight": 1.0} for name in CELEB_A_ATTRIBUTES}
    config.model = "resnet"
    config.epochs = 10
    config.batch_size = 128
    config.learning_rate = 1e-3
    config.best_metric = "Smiling/auc"
    return config
