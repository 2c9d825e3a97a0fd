"""Train state, compiled steps, loops and plots."""
from mtl_jax.train.loop import FitResult, evaluate, fit, predict, summarize
from mtl_jax.train.plots import plot_history
from mtl_jax.train.seeds import SeedRun, evaluate_seeds, fit_seeds
from mtl_jax.train.state import TrainState, create_train_state, init_params
from mtl_jax.train.step import make_eval_step, make_predict_step, make_train_step

__all__ = ["FitResult", "evaluate", "fit", "predict", "summarize", "plot_history", "SeedRun", "evaluate_seeds",
           "fit_seeds", "TrainState",
           "create_train_state", "init_params", "make_eval_step", "make_predict_step", "make_train_step"]
