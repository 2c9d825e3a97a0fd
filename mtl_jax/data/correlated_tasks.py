"""Synthetic regression tasks with a chosen correlation structure: many tasks whose gradients conflict.

The synthetic benchmark of MMoE (Ma et al. 2018, "Modeling Task Relationships in Multi-task
Learning with Multi-gate Mixture-of-Experts", KDD, section 3.2), generalised from two tasks to
``T``: each task ``t`` has a weight vector ``w_t`` in ``R^d`` and, for an input ``x ~ N(0, I_d)``,

    y_t = w_t . x + sum_{i=1..m} sin(alpha_i w_t . x + beta_i) + eps_t,   eps_t ~ N(0, NOISE^2)

with ``m = 10`` shared sinusoids (``alpha_i, beta_i ~ N(0, 0.01)``, as in the paper). The
tasks' relation is set by the cosines of their weight vectors,
``cos(w_i, w_j) = C_ij`` with ``w_t = SCALE * U L_t`` (``U``: ``d x T`` orthonormal columns,
``L L^T = C`` the Cholesky factor): the Pearson correlation of the linear parts of ``y_i`` and
``y_j`` is exactly ``C_ij``, which the paper shows drives how much sharing helps.

Here ``C`` has two opposing groups: tasks ``0..T/2-1`` and ``T/2..T-1`` correlate ``+rho``
within their group and ``-rho`` across (``C = (1 - rho) I + rho s s^T`` with ``s_t = +-1``, a
valid correlation matrix for ``0 <= rho < 1``). With ``rho > 0`` a shared representation is
pulled in opposite directions by the two groups: the task gradients of one group conflict
with the other's (negative cosines), the setting gradient-aggregation methods are for.

``x`` is ``features``-dimensional (``d >= T``); the world (``U``, ``alpha``, ``beta``) is drawn
from ``default_rng([seed])`` and each split's examples from ``default_rng([seed, split])``.
"""
from __future__ import annotations

import numpy as np

SINUSOIDS = 10
NOISE = 0.1
SCALE = 1.0
SPLITS = {"train": 0, "validation": 1, "test": 2}


def task_names(num_tasks: int) -> tuple[str, ...]:
    """``("t0", "t1", ...)``: tasks ``t0..t{T/2-1}`` form the first group, the rest the second."""
    return tuple(f"t{t}" for t in range(num_tasks))


def correlation_matrix(num_tasks: int, rho: float) -> np.ndarray:
    """``C``: ``+rho`` within each half of the tasks, ``-rho`` across, 1 on the diagonal."""
    if num_tasks < 2:
        raise ValueError(f"correlated_tasks needs at least 2 tasks, got {num_tasks}")
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"correlation must be in [0, 1), got {rho}")
    signs = np.where(np.arange(num_tasks) < num_tasks // 2, 1.0, -1.0)
    return (1.0 - rho) * np.eye(num_tasks) + rho * np.outer(signs, signs)


def world(num_tasks: int, rho: float, features: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The task weight vectors ``w`` (``[T, d]``) and the sinusoids' ``alpha``, ``beta``."""
    if features < num_tasks:
        raise ValueError(f"features ({features}) must be at least the number of tasks ({num_tasks})")
    rng = np.random.default_rng([seed])
    basis, _ = np.linalg.qr(rng.normal(size=(features, num_tasks)))  # orthonormal columns
    factor = np.linalg.cholesky(correlation_matrix(num_tasks, rho))
    return {"w": SCALE * factor @ basis.T,
            "alpha": rng.normal(0.0, 0.1, SINUSOIDS), "beta": rng.normal(0.0, 0.1, SINUSOIDS)}


def examples(num_examples: int, num_tasks: int = 8, rho: float = 0.5, features: int = 32, seed: int = 0,
             split: str = "train") -> dict[str, np.ndarray]:
    """``num_examples`` examples of a split: ``id``, ``x`` float32 ``[N, d]`` and one float32
    target per task."""
    w = world(num_tasks, rho, features, seed)
    rng = np.random.default_rng([seed, SPLITS[split]])
    x = rng.normal(size=(num_examples, features))
    linear = x @ w["w"].T  # [N, T]
    waves = np.sin(w["alpha"][None, None, :] * linear[..., None] + w["beta"]).sum(-1)
    y = linear + waves + rng.normal(0.0, NOISE, linear.shape)
    return {"id": np.arange(num_examples, dtype=np.int64), "x": x.astype(np.float32),
            **{name: y[:, t].astype(np.float32) for t, name in enumerate(task_names(num_tasks))}}
