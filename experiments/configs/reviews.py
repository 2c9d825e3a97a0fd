"""NLP: one shared text trunk, two tasks on the same reviews (``reviews``, mtl_jax/data/reviews.py):
``sentiment`` (binary) and ``topic`` (4 classes), from token ids through a one-layer transformer
encoder (``model = "text_encoder"``), equal weights.

    mtl-jax train --config experiments/configs/reviews.py --workdir runs/reviews
"""
from mtl_jax.config import default_config

VOCAB_SIZE, MAX_LENGTH = 86, 48  # len(mtl_jax.data.reviews.VOCAB), its MAX_LENGTH (tests/test_reviews.py checks)


def get_config():
    config = default_config()
    config.dataset = "reviews"
    config.data = {"train_size": 8000, "validation_size": 1000, "test_size": 2000, "seed": 0}
    config.tasks = {"sentiment": {"weight": 1.0}, "topic": {"weight": 1.0}}
    config.model = "text_encoder"
    config.model_kwargs = {"vocab_size": VOCAB_SIZE, "embed_dim": 32, "layers": 1, "num_heads": 2, "mlp_dim": 64,
                           "max_length": MAX_LENGTH}
    config.head_hidden = (32,)
    config.epochs = 8
    config.batch_size = 64
    config.learning_rate = 2e-3
    config.best_metric = "sentiment/auc"
    return config
