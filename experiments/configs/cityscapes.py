"""Dense multi-task vision on real street scenes: Cityscapes semantic segmentation (19 classes)
and disparity (per-pixel inverse depth) from one shared trunk, the pair of MTAN's and Nash-MTL's
Cityscapes benchmark, at 128x256 (mtl_jax/data/tfds_recipes.py). The zips are placed by hand
first, as TFDS's catalog says. MTAN's per-task attention over a shared conv trunk; try
``--set architecture=hard --set model=resnet`` for hard sharing, ``--set weighting=uncertainty``
or ``--set aggregator=upgrad`` for balancing.

    mtl-jax train --config experiments/configs/cityscapes.py --workdir runs/cityscapes
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "cityscapes"
    config.data = {"image_size": (128, 256)}
    config.tasks = {"segmentation": {"weight": 1.0}, "disparity": {"weight": 1.0}}
    config.model = "none"
    config.architecture = "mtan"
    config.epochs = 20
    config.batch_size = 8
    config.learning_rate = 1e-4
    config.best_metric = "segmentation/miou"
    return config
