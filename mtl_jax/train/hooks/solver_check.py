"""One warning per run when an aggregation method's solver did not certify its direction.

Methods that solve a problem each step (:mod:`mtl_jax.aggregation.certificate`) report their
worst residual and its ratio to the tolerance in the step's outputs (logged as
``train/solver_residual``); the first step whose ratio exceeds 1 is reported once.
"""
from __future__ import annotations

import warnings

from mtl_jax.aggregation import certificate
from mtl_jax.train.hooks.base import Hook


class SolverCheck(Hook):
    def __init__(self):
        self.warned = False

    def on_outputs(self, run, step, outputs) -> None:
        if (self.warned or float(outputs.get("solver_ratio", 0.0)) <= 1.0
                or bool(outputs.get("overflow", False))):  # a loss-scale overflow: nothing was solved on it
            return
        self.warned = True
        names = ", ".join(certificate.methods(run.state.weighting_state)) or "the aggregation method"
        ratio, residual = float(outputs["solver_ratio"]), float(outputs["solver_residual"])
        warnings.warn(f"{names}: the solver's residual {residual:.3g} at step {step} is {ratio:.3g}x its tolerance, "
                      "so this step's direction is not certified exact (logged as train/solver_residual; reported "
                      "once). In float32 badly conditioned or nearly Pareto-stationary task gradients cause it: "
                      "jax.config.update('jax_enable_x64', True) computes the Gramian and the solve in float64",
                      RuntimeWarning, stacklevel=2)
