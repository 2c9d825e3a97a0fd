"""Multi-input NLP: sentiment and topic learned from *different* texts, as when one corpus is
labelled for sentiment and another for topic (mtl_jax/data/task_mixture.py).

The generated ``reviews`` train split is dealt into two disjoint corpora, 90 % labelled only for
``sentiment`` and 10 % only for ``topic``; each step reads a batch of one corpus, drawn with
probability ``n_d^(1/2)`` (temperature sampling, tau = 2: the small corpus is read about a
quarter of the steps instead of a tenth), and the other task is absent from that step (no loss,
no gradient, no change to any method's state). Validation and test keep both labels on every
review. Try ``--set task_sampling=proportional`` (every example once per epoch) or
``round_robin``, and other balancing methods (``--set weighting=uncertainty``).

    mtl-jax train --config experiments/configs/reviews_multi_input.py --workdir runs/reviews_multi_input
"""
from reviews import get_config as reviews_config


def get_config():
    config = reviews_config()
    config.task_sampling = "temperature"
    config.sampling_temperature = 2.0
    config.task_shares = {"sentiment": 0.9, "topic": 0.1}
    config.best_metric = "topic/accuracy"
    return config
