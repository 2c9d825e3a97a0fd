"""Houses, five tasks: IMTL-L (Liu et al. 2021): learned loss scales."""
from houses_mtl import houses_mtl


def get_config():
    return houses_mtl("imtl_l")
