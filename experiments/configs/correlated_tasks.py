"""Many conflicting tasks: ``correlated_tasks`` (8 regression tasks of a 32-d input in two groups,
correlated +0.5 within and -0.5 across, MMoE's synthetic data generalised) on a shared MLP trunk
whose last layer has 4 units, with equal weights. Eight target directions compete for a
4-dimensional shared representation, so the tasks' gradients conflict (about a third of the
28 pairs have negative cosines at a step, some near -0.3): the case of every
gradient-aggregation method, e.g.
``--config.aggregator=upgrad --config.gradient_level=parameter``. About a minute on 2 CPU cores.

    mtl-jax train --config experiments/configs/correlated_tasks.py --workdir runs/correlated_tasks
"""
from mtl_jax.config import default_config
from mtl_jax.data.correlated_tasks import task_names


def get_config():
    config = default_config()
    config.dataset = "correlated_tasks"
    config.data = {"train_size": 2000, "validation_size": 500, "test_size": 2000, "num_tasks": 8,
                   "correlation": 0.5, "features": 32}
    config.tasks = {name: {"weight": 1.0} for name in task_names(8)}
    config.model = "mlp"
    config.model_kwargs = {"features": (64, 4)}  # a 4-unit shared representation for 8 tasks: they compete
    config.head_hidden = (16,)
    config.epochs = 20
    config.batch_size = 64
    config.learning_rate = 1e-3
    config.best_metric = ""
    config.gradient_diagnostics = True
    return config
