"""Houses, five tasks: uncertainty weighting (Kendall et al. 2018): learned log-variances."""
from houses_mtl import houses_mtl


def get_config():
    return houses_mtl("uw")
