"""Hooks of the training loop (:mod:`mtl_jax.train.train_loop`), one job per file.

:class:`Hook` and the event table are in :mod:`mtl_jax.train.hooks.base`. ``fit`` composes, in
this order: :class:`NonFinite`, :class:`SolverCheck`, :class:`Affinity`, :class:`Evaluation`,
the user's hooks, :class:`BestCheckpoint`, :class:`Progress`, :class:`MetricLog`,
:class:`Checkpointing`, :class:`RunFiles`.
"""
from mtl_jax.train.hooks.affinity import Affinity
from mtl_jax.train.hooks.base import EVENTS, Hook, every
from mtl_jax.train.hooks.best import BestCheckpoint
from mtl_jax.train.hooks.checkpointing import Checkpointing
from mtl_jax.train.hooks.evaluation import Evaluation
from mtl_jax.train.hooks.metric_log import MetricLog
from mtl_jax.train.hooks.nonfinite import NonFinite, NonFinitePolicy
from mtl_jax.train.hooks.progress import Progress, epoch_line, progress_mode
from mtl_jax.train.hooks.run_files import HISTORY_FILE, RunFiles
from mtl_jax.train.hooks.solver_check import SolverCheck

__all__ = ["EVENTS", "Affinity", "BestCheckpoint", "Checkpointing", "Evaluation", "Hook", "MetricLog", "NonFinite",
           "NonFinitePolicy", "Progress", "RunFiles", "SolverCheck", "HISTORY_FILE", "epoch_line", "every",
           "progress_mode"]
