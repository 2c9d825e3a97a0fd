"""Houses, five tasks: GradNorm (Chen et al. 2018), alpha 1.5, at the shared representation."""
from houses_mtl import houses_mtl


def get_config():
    return houses_mtl("gradnorm", alpha=1.5)
