"""Multi-input NLP on public corpora (mtl_jax/data/text_corpora.py): sentiment learned from IMDB
reviews and topic from AG News descriptions, one shared text trunk, each step a batch of one
corpus (no text carries both labels). Texts are hashed to token ids (no vocabulary file).
TFDS downloads both corpora on first use. ``--set task_sampling=temperature`` evens out AG
News's five-fold size; ``--set tasks='{"sentiment": {}}'`` trains the single-task baseline.

    mtl-jax train --config experiments/configs/imdb_ag_news.py --workdir runs/imdb_ag_news
"""
from mtl_jax.config import default_config

VOCAB_SIZE, MAX_LENGTH = 2 ** 15, 128


def get_config():
    config = default_config()
    config.dataset = "imdb_ag_news"
    config.data = {"vocab_size": VOCAB_SIZE, "max_length": MAX_LENGTH}
    config.tasks = {"sentiment": {"weight": 1.0}, "topic": {"weight": 1.0}}
    config.task_sampling = "proportional"
    config.model = "text_encoder"
    config.model_kwargs = {"vocab_size": VOCAB_SIZE, "embed_dim": 64, "layers": 2, "num_heads": 4, "mlp_dim": 128,
                           "max_length": MAX_LENGTH}
    config.head_hidden = (64,)
    config.epochs = 3
    config.batch_size = 64
    config.learning_rate = 1e-3
    config.best_metric = "sentiment/auc"
    return config
