"""Base config for the recommendation example: click + conversion on generated ``clicks`` impressions.

Shared user/item embeddings (``model='field_embedding'``: one table per categorical field)
feed the chosen ``architecture``; ``click`` is observed on every impression, ``conversion``
only after a click (its loss and metrics use clicked impressions alone). Per-architecture
configs beside this file call :func:`clicks_mtl`; ``experiments/recommendation.py`` trains
them all and compares per-task AUC and log-loss.

    mtl-jax train --config experiments/configs/clicks_mmoe.py --workdir runs/clicks_mmoe
"""
from mtl_jax.config import default_config
from mtl_jax.data.clicks import VOCAB_SIZES


def clicks_mtl(architecture="hard", **architecture_kwargs):
    config = default_config()
    config.dataset = "clicks"
    config.data = {"train_size": 30000, "validation_size": 5000, "test_size": 10000, "seed": 0}
    config.tasks = {"click": {"weight": 1.0}, "conversion": {"weight": 1.0}}
    config.model = "field_embedding"
    config.model_kwargs = {"vocab_sizes": VOCAB_SIZES, "embed_dim": 8}
    config.architecture = architecture
    config.architecture_kwargs = architecture_kwargs
    config.head_hidden = (16,)
    config.learning_rate = 2e-3
    config.batch_size = 256
    config.eval_batch_size = 2048
    config.epochs = 8
    config.best_metric = "conversion/log_loss"  # the sparse task overfits first
    return config


def get_config():
    return clicks_mtl()
