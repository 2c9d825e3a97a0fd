"""Task conflict at scale: CelebA's 40 attributes (T = 40, celeb_a.py; the dataset's files are
placed by hand first, as TFDS's catalog says), every gradient-aggregation method at both
gradient levels (the shared feature map, ~1 equal-weight step; and every shared parameter,
exact) against equal weighting, 3 seeds each.

    mtl-jax compare --config experiments/configs/compare_celeb_a.py --workdir runs/compare_celeb_a

No single-task baselines (40 models per seed): the table reports each attribute's test AUC, the
rank averaged over the 40 and the time per step, not delta-m%. Set ``single_task = True`` to
add them.
"""
import ml_collections

from mtl_jax.compare.grid import every_aggregator


def get_config():
    config = ml_collections.ConfigDict()
    config.base = "celeb_a.py"
    config.overrides = ["tensorboard=False", "best_metric=", "epochs=5"]
    config.axes = {"method": every_aggregator()}
    config.seeds = [0, 1, 2]
    config.single_task = False
    config.metrics = []
    config.checkpoint = "final"
    return config
