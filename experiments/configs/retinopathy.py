"""Diabetic retinopathy (``retinopathy``, TFDS ``diabetic_retinopathy_detection/btgraham-300``; its
files are placed by hand first, as TFDS's catalog says): medical detection + grading from one
128x128 fundus photograph: ``detection`` (any retinopathy, binary) and ``grade`` (0-4), a small
ResNet trunk shared by both.

    mtl-jax train --config experiments/configs/retinopathy.py --workdir runs/retinopathy
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "retinopathy"
    config.data = {"image_size": (128, 128)}
    config.tasks = {"detection": {"weight": 1.0}, "grade": {"weight": 1.0}}
    config.model = "resnet"
    config.epochs = 10
    config.batch_size = 64
    config.learning_rate = 1e-3
    config.best_metric = "detection/auc"
    return config
