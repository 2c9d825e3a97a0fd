"""Houses, five tasks: DB-MTL (Lin et al. 2023), beta 0.9, beta_sigma 0.5, at the shared representation."""
from houses_mtl import houses_mtl


def get_config():
    return houses_mtl("db_mtl", beta=0.9, beta_sigma=0.5)
