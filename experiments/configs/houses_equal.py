"""Houses, five tasks: equal weights (EW): plain summed-loss training, the reference every method is compared with."""
from houses_mtl import houses_mtl


def get_config():
    return houses_mtl("equal")
