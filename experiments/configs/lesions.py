"""Medical imaging (``lesions``, mtl_jax/data/lesions.py): detection + grading with an auxiliary
per-pixel task. The seed CNN's trunk is shared by ``lesion`` (present or not, binary), ``grade``
(mild / moderate / severe, trained and scored only on images with a lesion: label -1 elsewhere)
and ``mask`` (the lesion's pixels, segmentation, weight 0.5).

    mtl-jax train --config experiments/configs/lesions.py --workdir runs/lesions
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "lesions"
    config.data = {"train_size": 4000, "validation_size": 500, "test_size": 1000, "seed": 0}
    config.tasks = {"lesion": {"weight": 1.0}, "grade": {"weight": 1.0}, "mask": {"weight": 0.5}}
    config.model = "seed_cnn"
    config.head_hidden = (64,)
    config.epochs = 10
    config.batch_size = 64
    config.learning_rate = 2e-3
    config.best_metric = "lesion/auc"
    return config
