"""Synthetic recommendation impressions: click and conversion from shared user/item factors.

A fixed world (drawn from ``seed``) has ``NUM_USERS`` users in ``USER_SEGMENTS`` segments and
``NUM_ITEMS`` items in ``ITEM_CATEGORIES`` categories. User ``u`` has latent factors
``p_u, r_u`` and item ``i`` has ``q_i, s_i`` (``FACTORS``-dimensional); an impression shows
item ``i`` to user ``u`` at slot ``position`` in ``0..POSITIONS-1``. With
``sigma(a) = 1 / (1 + e^-a)``::

    click      ~ Bernoulli(sigma(-1.6 + 2.0 <p_u, q_i> + A[seg_u, cat_i] - 0.35 position))
    conversion ~ Bernoulli(sigma(-1.5 + 1.5 <p_u, q_i> + 1.5 <r_u, s_i> + quality_i))   only if clicked

so the tasks share the user/item interest ``<p_u, q_i>`` (what shared embeddings and experts
can learn once) while each has its own signal: the slot bias and segment/category affinity
for clicks, the ``<r_u, s_i>`` taste and item quality for conversions. As in real logs (and
ESMM, Ma et al. 2018), a conversion is only observed after a click:

* ``click``: 0/1 on every impression (CTR);
* ``conversion``: 0/1 on clicked impressions, ``-1`` (missing, masked out of the loss and
  metrics) otherwise (CVR, trained on the clicked space);
* ``purchase``: ``click * conversion`` on every impression (CTCVR).

Inputs are the categorical ``fields`` ``[user, item, user_segment, item_category, position]``
(int32), sized by ``VOCAB_SIZES`` for :class:`mtl_jax.models.trunks.FieldEmbedding`.
Each split is drawn from ``default_rng([seed, split])``; the world from ``default_rng([seed])``.
"""
from __future__ import annotations

import numpy as np

NUM_USERS = 150
NUM_ITEMS = 60
USER_SEGMENTS = 8
ITEM_CATEGORIES = 10
POSITIONS = 5
FACTORS = 4
VOCAB_SIZES = (NUM_USERS, NUM_ITEMS, USER_SEGMENTS, ITEM_CATEGORIES, POSITIONS)
FIELDS = ("user", "item", "user_segment", "item_category", "position")
SPLITS = {"train": 0, "validation": 1, "test": 2}


def world(seed: int = 0) -> dict[str, np.ndarray]:
    """The users, items and their latent factors (the same for every split)."""
    rng = np.random.default_rng([seed])
    scale = 1.0 / np.sqrt(FACTORS)
    return {"segment": rng.integers(0, USER_SEGMENTS, NUM_USERS),
            "category": rng.integers(0, ITEM_CATEGORIES, NUM_ITEMS),
            "p": rng.normal(0.0, scale, (NUM_USERS, FACTORS)) * np.sqrt(2.0),
            "q": rng.normal(0.0, scale, (NUM_ITEMS, FACTORS)) * np.sqrt(2.0),
            "r": rng.normal(0.0, scale, (NUM_USERS, FACTORS)) * np.sqrt(2.0),
            "s": rng.normal(0.0, scale, (NUM_ITEMS, FACTORS)) * np.sqrt(2.0),
            "affinity": rng.normal(0.0, 0.8, (USER_SEGMENTS, ITEM_CATEGORIES)),
            "quality": rng.normal(0.0, 0.7, NUM_ITEMS)}


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def impressions(num_examples: int, seed: int = 0, split: str = "train") -> dict[str, np.ndarray]:
    """``num_examples`` impressions of a split as arrays (see the module docstring)."""
    w = world(seed)
    rng = np.random.default_rng([seed, SPLITS[split]])
    user = rng.integers(0, NUM_USERS, num_examples)
    item = rng.integers(0, NUM_ITEMS, num_examples)
    position = rng.integers(0, POSITIONS, num_examples)
    interest = np.sum(w["p"][user] * w["q"][item], axis=1)
    click_logit = -1.6 + 2.0 * interest + w["affinity"][w["segment"][user], w["category"][item]] - 0.35 * position
    taste = np.sum(w["r"][user] * w["s"][item], axis=1)
    conversion_logit = -1.5 + 1.5 * interest + 1.5 * taste + w["quality"][item]
    click = (rng.uniform(size=num_examples) < _sigmoid(click_logit)).astype(np.int32)
    converts = (rng.uniform(size=num_examples) < _sigmoid(conversion_logit)).astype(np.int32)
    fields = np.stack([user, item, w["segment"][user], w["category"][item], position], axis=1).astype(np.int32)
    return {"id": np.arange(num_examples, dtype=np.int64), "fields": fields, "click": click,
            "conversion": np.where(click == 1, converts, -1).astype(np.int32),
            "purchase": (click * converts).astype(np.int32)}


def generate(num_examples: int, seed: int = 0, split: str = "train"):
    """Yields ``(index, example)`` for the builder."""
    arrays = impressions(num_examples, seed, split)
    for i in range(num_examples):
        yield i, {key: value[i] for key, value in arrays.items()}
