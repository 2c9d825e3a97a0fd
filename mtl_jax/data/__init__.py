"""Generated datasets (the embedded ``houses`` and ``clicks``) and fixed-shape batching."""
from mtl_jax.data.batching import batches, num_examples, steps_per_epoch
from mtl_jax.data.clicks_builder import Clicks, clicks_config, load_clicks
from mtl_jax.data.generated import read_split
from mtl_jax.data.houses_builder import Houses, houses_config, load_houses

__all__ = ["batches", "num_examples", "steps_per_epoch", "Clicks", "clicks_config", "load_clicks", "Houses",
           "houses_config", "load_houses", "read_split"]
