"""Clicks: soft parameter sharing — one MLP column per task on the categorical ids, coupled by a
trace-norm penalty between the columns (Yang & Hospedales 2017); ``--set penalty=l2`` gives the
L2 coupling of Duong et al. 2015.

The columns read the raw id fields (as floats) here, to show the coupling alone; the
embedding-based configs beside this one share the embeddings instead.
"""
from clicks_mtl import clicks_mtl


def get_config():
    config = clicks_mtl("columns", features=(64, 32))
    config.model = "none"
    config.model_kwargs = {}
    config.penalty = "trace_norm"
    config.penalty_weight = 1e-3
    return config
