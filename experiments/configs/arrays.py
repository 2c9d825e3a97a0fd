"""Your own arrays from the CLI (``dataset = "arrays"``, see mtl_jax/data/arrays.py): an MLP trunk
on the inputs ``x``, ``quality`` (regression) + 0.5 x ``grade`` (3 classes).

    python experiments/make_arrays_example.py       # or your own .npz files
    mtl-jax train --config experiments/configs/arrays.py --workdir runs/arrays
"""
from mtl_jax.config import default_config


def get_config():
    config = default_config()
    config.dataset = "arrays"
    config.data = {"train": "data/arrays_example/train.npz", "validation": "data/arrays_example/validation.npz",
                   "test": "data/arrays_example/test.npz", "input_key": "x"}
    config.tasks = {"quality": {"kind": "regression"},
                    "grade": {"kind": "classification", "num_classes": 3, "weight": 0.5}}
    config.model = "mlp"
    config.model_kwargs = {"features": (64, 64)}
    config.epochs = 20
    config.batch_size = 32
    config.learning_rate = 3e-3
    config.best_metric = "quality/rmse"
    return config
