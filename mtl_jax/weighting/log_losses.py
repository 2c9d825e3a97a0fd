"""The scale-invariant log-loss option, usable before any method in a :func:`~mtl_jax.balancing.chain`.

``chain(log_losses(), method)`` makes the model minimise ``sum_i v_i log(L_i + eps)`` where
``v`` are the method's weights, decided by its own rule from the raw losses (so UW still
learns variances of ``L_i``, DWA still compares epoch losses, GradNorm still measures
training rates). On its own, ``log_losses()`` weights

    w_i = 1 / (L_i + eps),   so   sum_i v_i w_i grad L_i = sum_i v_i grad log(L_i + eps),

and the methods after it in the chain receive the Gramian of the log-loss gradients,
``G_ij / ((L_i + eps)(L_j + eps))``. Multiplying a task's loss by a constant leaves the update
unchanged (up to ``eps``): no task dominates by its units alone. This is the loss-scale
half of DB-MTL (Lin et al. 2023), here available to every method.

References: B. Lin, W. Jiang, F. Ye, Y. Zhang, P. Chen, Y.-C. Chen, S. Liu, J. T. Kwok.
"Dual-Balancing for Multi-Task Learning", arXiv:2308.12029, 2023.
"""
from __future__ import annotations

from mtl_jax.balancing import Method, among_present, present_of
from mtl_jax.caching import by_value


@by_value
def log_losses(eps: float = 1e-8) -> Method:
    def update(info, state, key):
        del key
        return among_present(1.0 / (info.losses + eps), present_of(info)), state

    return Method(lambda num_tasks: (), update)
