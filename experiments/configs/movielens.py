"""Recommendation on real ratings: MovieLens 100K (mtl_jax/data/movielens.py), ``rating`` (stars,
regression) and ``like`` (4+ stars, binary) from shared user/movie embeddings, as an MMoE (two
experts). TFDS downloads the ratings on first use. ``--set architecture=hard`` for hard sharing.

    mtl-jax train --config experiments/configs/movielens.py --workdir runs/movielens
"""
from mtl_jax.config import default_config
from mtl_jax.data.movielens import VOCAB_SIZES


def get_config():
    config = default_config()
    config.dataset = "movielens"
    config.tasks = {"rating": {"weight": 1.0}, "like": {"weight": 1.0}}
    config.model = "field_embedding"
    config.model_kwargs = {"vocab_sizes": VOCAB_SIZES, "embed_dim": 16}
    config.architecture = "mmoe"
    config.architecture_kwargs = {"num_experts": 2, "expert_features": (32,)}
    config.head_hidden = (16,)
    config.learning_rate = 2e-3
    config.batch_size = 256
    config.eval_batch_size = 2048
    config.epochs = 10
    config.best_metric = "rating/rmse"
    return config
