"""Multi-input NLP from public corpora: sentiment from IMDB reviews, topic from AG News.

No corpus carries both labels, so each task reads its own (:class:`~mtl_jax.data.task_mixture.
TaskMixture`); texts become token ids by the hashing trick (:mod:`mtl_jax.data.hashing_tokenizer`),
so nothing but the corpora is needed. The recipe ``imdb_ag_news``:

* ``sentiment`` (binary, 1 positive) from TFDS ``imdb_reviews`` (Maas et al. 2011): 25,000
  training reviews (the last 10 % held out for validation) and 25,000 test reviews;
* ``topic`` (4 classes: World, Sports, Business, Sci/Tech) from TFDS ``ag_news_subset`` (Zhang
  et al. 2015): the ``description`` of 120,000 training articles (5 % held out) and 7,600 test.

Each split is a mixture of the two corpora: training mixes them per step by the config's
``task_sampling`` (proportional by default: AG News has about five times IMDB's training
texts; ``temperature`` evens that out), evaluation scores each task on its own corpus. A config
that chooses one task reads only its corpus (a single-task baseline). TFDS downloads both
corpora on first use.

References: A. Maas, R. Daly, P. Pham, D. Huang, A. Ng, C. Potts. "Learning Word Vectors for
Sentiment Analysis", ACL 2011. X. Zhang, J. Zhao, Y. LeCun. "Character-level Convolutional
Networks for Text Classification", NeurIPS 2015.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from mtl_jax.data.hashing_tokenizer import HashingTokenizer

INPUT_KEY = "tokens"


@dataclasses.dataclass(frozen=True)
class Corpus:
    """One task's TFDS corpus: its text and label features, and its splits."""
    tfds_name: str
    text: str
    label: str
    kind: str                      # "binary" or "classification"
    class_names: tuple[str, ...]
    splits: tuple[str, str, str]   # TFDS split specs for train, validation, test


CORPORA = {
    "sentiment": Corpus("imdb_reviews", "text", "label", "binary", ("negative", "positive"),
                        ("train[:90%]", "train[90%:]", "test")),
    "topic": Corpus("ag_news_subset", "description", "label", "classification",
                    ("World", "Sports", "Business", "Sci/Tech"), ("train[:95%]", "train[95%:]", "test")),
}


@dataclasses.dataclass(frozen=True)
class TextExample:
    """One TFDS example -> ``{"tokens": int32 [max_length], task: label}`` (picklable)."""
    corpus: Corpus
    task: str
    tokenizer: HashingTokenizer

    def __call__(self, example: Mapping) -> dict[str, np.ndarray]:
        label = np.asarray(example[self.corpus.label])
        label = label.astype(np.float32) if self.corpus.kind == "binary" else label.astype(np.int32)
        return {INPUT_KEY: self.tokenizer(example[self.corpus.text]), self.task: label}


def load_text_corpora(tasks: Sequence[str] = tuple(CORPORA), *, vocab_size: int = 2 ** 15, max_length: int = 128,
                      download: bool = True, threads: int = 1, in_memory: bool = False,
                      data_dir: str | Path | None = None) -> dict:
    """``{split: TaskMixture}`` of the chosen tasks' corpora (see the module doc)."""
    from mtl_jax.data.sources import RecordSource, head
    from mtl_jax.data.task_mixture import TaskMixture
    from mtl_jax.data.tfds_tasks import tfds_sources

    unknown = [t for t in tasks if t not in CORPORA]
    if unknown:
        raise KeyError(f"unknown text task(s) {unknown}; the corpora label {sorted(CORPORA)}")
    tokenizer = HashingTokenizer(int(vocab_size), int(max_length))
    per_split: dict[str, dict] = {"train": {}, "validation": {}, "test": {}}
    for task in tasks:
        corpus = CORPORA[task]
        sources = tfds_sources(corpus.tfds_name, dict(zip(per_split, corpus.splits)), data_dir, download)
        for split, source in sources.items():
            records = RecordSource(source, transform=TextExample(corpus, task, tokenizer), threads=threads)
            per_split[split][task] = head(records, len(records)) if in_memory else records
    return {split: TaskMixture(datasets) for split, datasets in per_split.items()}
