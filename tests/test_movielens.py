"""MovieLens 100K recipe on TFDS mock data (nothing downloads): fields, targets, a config run."""
import zlib

import numpy as np

from mtl_jax.data.movielens import VOCAB_SIZES, RatingExample, load_movielens

from conftest import mock_tfds


def test_a_rating_becomes_hashed_ids_within_every_fields_vocabulary_and_both_targets():
    example = {"user_id": b"42", "movie_id": np.asarray(b"1193", object), "user_occupation_label": np.int64(7),
               "user_gender": np.bool_(True), "bucketized_user_age": np.float32(35.0),
               "movie_genres": np.asarray([4, 9]), "user_rating": np.float32(4.0)}
    out = RatingExample()(example)
    assert out["fields"].tolist() == [zlib.crc32(b"42") % 2048, zlib.crc32(b"1193") % 4096, 7, 1, 3, 5]
    assert out["rating"] == 4.0 and out["like"] == 1.0
    assert RatingExample()({**example, "user_rating": np.float32(3.0), "movie_genres": np.zeros(0)})["like"] == 0.0


def test_the_recipe_streams_ratings_and_the_config_trains_on_them(tmp_path, data_dir):
    from mtl_jax import experiment
    from mtl_jax.config import load_config

    with mock_tfds(48):
        splits = load_movielens(data_dir=data_dir, threads=0)
        batch = splits["train"].read(np.arange(8))
        assert batch["fields"].shape == (8, 6) and batch["fields"].dtype == np.int32
        assert ((batch["fields"] >= 0) & (batch["fields"] < np.asarray(VOCAB_SIZES))).all()
        assert set(np.unique(batch["like"])) <= {0.0, 1.0}
        config = load_config("experiments/configs/movielens.py", ["epochs=1", "batch_size=16", "eval_batch_size=16",
                                                                           "plots=False"])
        results = experiment.train_and_evaluate(config, tmp_path, progress=False, data_dir=data_dir)
    # mock ratings are random floats below 4: no like, so AUC is undefined; the loss is not
    assert np.isfinite(results["final"]["rating/rmse"]) and np.isfinite(results["final"]["like/loss"])
