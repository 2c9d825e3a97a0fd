"""Clicks: hard sharing — shared embeddings and one Dense(64) layer, a tower per task."""
from clicks_mtl import clicks_mtl


def get_config():
    config = clicks_mtl("hard")
    config.model_kwargs.features = (64,)
    return config
