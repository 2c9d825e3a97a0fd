"""Multi-input NLP from public corpora (IMDB sentiment + AG News topic) on TFDS mock data, and the
hashing tokenizer (nothing downloads)."""
import zlib

import numpy as np
import pytest

from mtl_jax.data.hashing_tokenizer import HashingTokenizer
from mtl_jax.data.task_mixture import TaskMixture
from mtl_jax.data.text_corpora import load_text_corpora

from conftest import mock_tfds


def test_hashing_ids_are_crc32_of_each_word_fixed_length_and_the_same_for_str_and_bytes():
    tokenizer = HashingTokenizer(vocab_size=1000, max_length=6)
    ids = tokenizer("Great film.<br /><br />Didn't LIKE the end")
    words = ["great", "film", "didn't", "like", "the", "end"]
    assert ids.tolist() == [1 + zlib.crc32(w.encode()) % 999 for w in words] and ids.dtype == np.int32
    assert (tokenizer(b"great film") == tokenizer(np.asarray(b"great film", object))).all()
    assert tokenizer("great film").tolist()[2:] == [0, 0, 0, 0]  # padded
    assert tokenizer(" ".join(["word"] * 50)).shape == (6,)  # truncated
    long = HashingTokenizer(vocab_size=7, max_length=400)(" ".join(f"w{i}" for i in range(400)))
    assert long.min() >= 1 and long.max() <= 6  # 0 is padding only
    with pytest.raises(ValueError, match="vocab_size >= 2"):
        HashingTokenizer(vocab_size=1)


def test_each_task_reads_its_own_corpus_as_token_ids_and_labels(data_dir):
    with mock_tfds(24):
        splits = load_text_corpora(vocab_size=512, max_length=16, data_dir=data_dir, threads=0)
        assert set(splits) == {"train", "validation", "test"}
        train = splits["train"]
        assert isinstance(train, TaskMixture) and train.groups == [("sentiment",), ("topic",)]
        for batch in list(train.batches(8, seed=0))[:3]:
            assert batch["tokens"].shape == (8, 16) and batch["tokens"].dtype == np.int32
            assert batch["tokens"].max() < 512
            assert batch["sentiment"].dtype == np.float32 and batch["topic"].dtype == np.int32
            own = "sentiment" if batch["sentiment_mask"].any() else "topic"
            other = "topic" if own == "sentiment" else "sentiment"
            assert (batch[f"{other}_mask"] == 0).all() and (batch[f"{own}_mask"] == 1).all()
        assert set(np.unique(batch["topic"] if own == "topic" else batch["sentiment"])) <= {0, 1, 2, 3}
        alone = load_text_corpora(("topic",), vocab_size=512, max_length=16, data_dir=data_dir, threads=0)
        assert alone["train"].groups == [("topic",)]  # a single-task baseline reads one corpus


def test_the_recipe_config_trains_and_evaluates_each_task_on_its_own_corpus(tmp_path, data_dir):
    from mtl_jax import experiment
    from mtl_jax.config import load_config

    config = load_config("experiments/configs/imdb_ag_news.py", [
        "data.vocab_size=256", "data.max_length=16", "model_kwargs.vocab_size=256", "model_kwargs.max_length=16",
        "model_kwargs.embed_dim=8", "model_kwargs.layers=1", "model_kwargs.num_heads=1", "model_kwargs.mlp_dim=8",
        "head_hidden=()", "epochs=1", "batch_size=8", "task_sampling=temperature", "plots=False"])
    with mock_tfds(16):
        built = experiment.build(config, data_dir)
        assert built.train.sampling == "temperature" and built.train.steps(8) == 4
        results = experiment.train_and_evaluate(config, tmp_path, progress=False, data_dir=data_dir)
    assert np.isfinite(results["final"]["sentiment/auc"]) and np.isfinite(results["final"]["topic/accuracy"])
    with pytest.raises(ValueError, match="already has one corpus per task"):
        with mock_tfds(16):
            experiment.build(load_config("experiments/configs/imdb_ag_news.py", ["task_shares.topic=2.0"]), data_dir)
