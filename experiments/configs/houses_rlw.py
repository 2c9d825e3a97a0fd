"""Houses, five tasks: random loss weighting (Lin et al. 2022)."""
from houses_mtl import houses_mtl


def get_config():
    return houses_mtl("rlw")
