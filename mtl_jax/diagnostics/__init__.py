"""What the tasks do to each other: gradient conflict (cosines of the task gradients) and
inter-task affinity (the lookahead effect of one task's step on another task's loss)."""
from mtl_jax.diagnostics.affinity import affinity_table, make_affinity_step, strongest_partners
from mtl_jax.diagnostics.conflict import conflict_summary, cosine_similarities

__all__ = ["affinity_table", "make_affinity_step", "strongest_partners", "conflict_summary", "cosine_similarities"]
