"""Houses, five tasks: dynamic weight average (Liu et al. 2019), temperature 2."""
from houses_mtl import houses_mtl


def get_config():
    return houses_mtl("dwa", temperature=2.0)
