"""Which architecture for recommendation? ``clicks`` (click, and conversion observed only after a
click) with hard sharing, MMoE and PLE over the shared field embeddings (clicks_mtl.py), against
one single-task model per task, 3 seeds each; reported on the best checkpoint by validation
conversion log-loss (the sparse task overfits first).

    mtl-jax compare --config experiments/configs/compare_clicks.py --workdir runs/compare_clicks
"""
import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.base = "clicks_mtl.py"
    config.overrides = ["tensorboard=False"]
    config.axes = {"architecture": {
        "hard": ["architecture=hard"],
        "mmoe": ["architecture=mmoe", "architecture_kwargs={'num_experts': 4, 'expert_features': (32,)}"],
        "ple": ["architecture=ple", "architecture_kwargs={'levels': 2, 'shared_experts': 2, 'task_experts': 2, "
                "'expert_features': (32,)}"]}}
    config.seeds = [0, 1, 2]
    config.single_task = True
    config.metrics = ["click/auc", "conversion/auc"]
    config.checkpoint = "best"
    return config
