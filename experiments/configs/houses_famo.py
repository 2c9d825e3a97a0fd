"""Houses, five tasks: FAMO (Liu et al. 2023), beta 0.025, gamma 1e-3."""
from houses_mtl import houses_mtl


def get_config():
    return houses_mtl("famo", beta=0.025, gamma=1e-3)
