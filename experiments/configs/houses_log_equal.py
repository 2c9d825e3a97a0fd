"""Houses, five tasks: equal weights on log-losses (scale-invariant; the loss transform of DB-MTL)."""
from houses_mtl import houses_mtl


def get_config():
    config = houses_mtl("equal")
    config.log_losses = True
    return config
