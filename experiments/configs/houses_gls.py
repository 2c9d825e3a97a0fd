"""Houses, five tasks: geometric-mean loss (Chennupati et al. 2019)."""
from houses_mtl import houses_mtl


def get_config():
    return houses_mtl("gls")
