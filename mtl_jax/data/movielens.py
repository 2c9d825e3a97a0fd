"""MovieLens 100K as a recommendation MTL problem: rating regression plus a "like" classification.

TFDS ``movielens/100k-ratings`` (Harper & Konstan 2015): 100,000 ratings (1-5 stars) of 1,682
movies by 943 users, with user age, gender and occupation and the movie's genres. TFDS has one
split; the recipe takes 80 / 10 / 10 % of it for train / validation / test. Tasks:

* ``rating`` (regression, stars 1-5; RMSE is the usual MovieLens metric);
* ``like`` (binary): the rating is 4 or 5, the implicit-feedback view of the same event (the
  two heads share user and item embeddings, as click/conversion do in ``clicks``).

Inputs are the categorical ``fields`` ``[user, movie, occupation, gender, age_bucket, genre]``
(int32) for :class:`mtl_jax.models.trunks.FieldEmbedding`, sized by :data:`VOCAB_SIZES`: user
and movie ids (strings) are hashed by CRC-32 into ``USER_BUCKETS`` / ``MOVIE_BUCKETS`` rows (no
id table to build; 943 users in 2,048 rows collide for about a fifth of them, harmless for
embeddings and the same in every process), the age bucket (1, 18, 25, 35, 45, 50, 56) is its
index, the genre is the movie's first (0: none). TFDS downloads the data on first use.

References: F. M. Harper, J. A. Konstan. "The MovieLens Datasets: History and Context", ACM
TiiS 5(4), 2015.
"""
from __future__ import annotations

import dataclasses
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np

TFDS_NAME = "movielens/100k-ratings"
USER_BUCKETS, MOVIE_BUCKETS = 2048, 4096
OCCUPATIONS, GENRES = 22, 21
AGE_BUCKETS = (1, 18, 25, 35, 45, 50, 56)
FIELDS = ("user", "movie", "occupation", "gender", "age_bucket", "genre")
VOCAB_SIZES = (USER_BUCKETS, MOVIE_BUCKETS, OCCUPATIONS, 2, len(AGE_BUCKETS), GENRES + 1)
SPLITS = {"train_split": "train[:80%]", "validation_split": "train[80%:90%]", "test_split": "train[90%:]"}
LIKED = 4.0  # stars from which a rating is a like


def _bucket(value, buckets: int) -> int:
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, str):
        value = value.encode("utf-8")
    return zlib.crc32(bytes(value)) % buckets


@dataclasses.dataclass(frozen=True)
class RatingExample:
    """One TFDS rating -> ``{"fields": int32 [6], "rating": float32, "like": float32}`` (picklable)."""

    def __call__(self, example: Mapping) -> dict[str, np.ndarray]:
        age = float(np.asarray(example["bucketized_user_age"]))
        genres = np.asarray(example["movie_genres"]).reshape(-1)
        fields = np.asarray([
            _bucket(example["user_id"], USER_BUCKETS),
            _bucket(example["movie_id"], MOVIE_BUCKETS),
            int(np.clip(np.asarray(example["user_occupation_label"]), 0, OCCUPATIONS - 1)),
            int(bool(np.asarray(example["user_gender"]))),
            int(np.argmin(np.abs(np.asarray(AGE_BUCKETS) - age))),
            int(np.clip(genres[0], 0, GENRES - 1)) + 1 if genres.size else 0,
        ], np.int32)
        rating = np.float32(np.asarray(example["user_rating"]))
        return {"fields": fields, "rating": rating, "like": np.float32(rating >= LIKED)}


def load_movielens(*, train_split: str = SPLITS["train_split"], validation_split: str = SPLITS["validation_split"],
                   test_split: str = SPLITS["test_split"], download: bool = True, threads: int = 1,
                   in_memory: bool = False, data_dir: str | Path | None = None) -> dict:
    """``{split: RecordSource}`` (or arrays with ``in_memory``) of MovieLens 100K ratings."""
    import tensorflow_datasets.structured.movielens  # noqa: F401 - registers the builder (TFDS skips it without TF)

    from mtl_jax.data.sources import RecordSource, head
    from mtl_jax.data.tfds_tasks import tfds_sources

    splits = {split: spec for split, spec in
              (("train", train_split), ("validation", validation_split), ("test", test_split)) if spec}
    sources = tfds_sources(TFDS_NAME, splits, data_dir, download)
    data = {split: RecordSource(source, transform=RatingExample(), threads=threads) for split, source in sources.items()}
    return {split: head(source, len(source)) for split, source in data.items()} if in_memory else data
