"""Generated product reviews from a small grammar: sentiment and topic of one text (NLP), offline.

A review is 2-4 sentences about one of four topics (electronics, books, food, travel), made
from templates such as ``the <noun> was <intensifier> <adjective>``, ``i <verb> this
<noun>`` or ``<opener> the <noun> is not <adjective>``. Nouns (and a few adjectives) belong
to a topic; sentiment words are shared by all topics, and ``not`` flips the word after it,
so word counts alone do not settle the sentiment (a model that reads order does better).
Tasks:

* ``sentiment`` (binary: 1 positive): the review's overall polarity. Every sentence but
  at most one carries it; the odd one (``but the <noun> was ...``) carries the opposite,
  so a review may be mixed;
* ``topic`` (4 classes): the topic its nouns come from; one sentence in five names a
  noun of another topic as a distractor (``better than my old <noun>``).

Labels are noisy, as annotators disagree: 8 % of sentiment labels are flipped and 5 % of
topic labels replaced by another topic (drawn per example), so test accuracy is capped near
0.92 / 0.95 and a model that fits the noise loses on the test split.

Inputs are token ids ``tokens`` int32 ``[MAX_LENGTH]`` into :data:`VOCAB` (0: padding), for
``model = "text_encoder"``; :func:`decode` turns them back into text. Example ``i`` of a
split depends only on ``default_rng([seed, split, i])``.
"""
from __future__ import annotations

import numpy as np

MAX_LENGTH = 48
TOPICS = ("electronics", "books", "food", "travel")
SENTIMENTS = ("negative", "positive")
SPLITS = {"train": 0, "validation": 1, "test": 2}
SENTIMENT_NOISE, TOPIC_NOISE = 0.08, 0.05

_NOUNS = {
    "electronics": ("phone", "laptop", "battery", "screen", "charger", "camera", "speaker", "keyboard"),
    "books": ("novel", "author", "plot", "chapter", "story", "ending", "character", "edition"),
    "food": ("pizza", "soup", "dessert", "sauce", "bread", "coffee", "menu", "waiter"),
    "travel": ("hotel", "flight", "room", "beach", "guide", "trip", "airport", "view"),
}
_TOPIC_ADJECTIVES = {
    "electronics": ("fast", "wireless", "charged"), "books": ("long", "written", "printed"),
    "food": ("fresh", "spicy", "served"), "travel": ("sunny", "booked", "crowded"),
}
_POSITIVE = ("good", "great", "excellent", "lovely", "perfect", "wonderful")
_NEGATIVE = ("bad", "poor", "awful", "terrible", "boring", "disappointing")
_POSITIVE_VERBS = ("love", "enjoyed", "recommend")
_NEGATIVE_VERBS = ("hate", "regret", "returned")
_INTENSIFIERS = ("very", "really", "quite", "so")
_OPENERS = ("honestly", "overall", "sadly", "well", "frankly")
_GLUE = ("the", "was", "is", "i", "this", "not", "but", "and", "it", "than", "my", "old", "better", "also")

VOCAB = ("<pad>",) + tuple(dict.fromkeys(
    _GLUE + _POSITIVE + _NEGATIVE + _POSITIVE_VERBS + _NEGATIVE_VERBS + _INTENSIFIERS + _OPENERS
    + sum(_NOUNS.values(), ()) + sum(_TOPIC_ADJECTIVES.values(), ())))
_INDEX = {word: i for i, word in enumerate(VOCAB)}


def _polar_phrase(rng: np.random.Generator, positive: bool) -> list[str]:
    """An adjective phrase of the given polarity, directly or as ``not`` + the opposite word."""
    if rng.random() < 0.3:
        return ["not", str(rng.choice(_NEGATIVE if positive else _POSITIVE))]
    words = [str(rng.choice(_INTENSIFIERS))] if rng.random() < 0.4 else []
    return words + [str(rng.choice(_POSITIVE if positive else _NEGATIVE))]


def _sentence(rng: np.random.Generator, topic: str, positive: bool, contrast: bool = False) -> list[str]:
    noun = str(rng.choice(_NOUNS[topic]))
    form = rng.integers(4)
    if contrast:
        return ["but", "the", noun, "was"] + _polar_phrase(rng, positive)
    if form == 0:
        return ["the", noun, "was"] + _polar_phrase(rng, positive)
    if form == 1:
        return ["i", str(rng.choice(_POSITIVE_VERBS if positive else _NEGATIVE_VERBS)), "this", noun]
    if form == 2:
        return [str(rng.choice(_OPENERS)), "the", noun, "is"] + _polar_phrase(rng, positive)
    adjective = str(rng.choice(_TOPIC_ADJECTIVES[topic]))
    return ["the", adjective, noun, "and", "it", "is"] + _polar_phrase(rng, positive)


def review(rng: np.random.Generator) -> tuple[list[str], int, int]:
    """One review's words, its sentiment (1 positive) and its topic index."""
    topic, sentiment = int(rng.integers(len(TOPICS))), int(rng.integers(2))
    words: list[str] = []
    sentences = int(rng.integers(2, 5))
    contrast_at = int(rng.integers(1, sentences)) if sentences >= 3 and rng.random() < 0.4 else -1
    for k in range(sentences):
        words += _sentence(rng, TOPICS[topic], bool(sentiment) != (k == contrast_at), contrast=k == contrast_at)
        if rng.random() < 0.2:
            other = TOPICS[(topic + int(rng.integers(1, len(TOPICS)))) % len(TOPICS)]
            words += ["better", "than", "my", "old", str(rng.choice(_NOUNS[other]))]
    return words[:MAX_LENGTH], sentiment, topic


def encode(words: list[str]) -> np.ndarray:
    """Words to ``[MAX_LENGTH]`` int32 ids, padded with 0."""
    ids = np.zeros(MAX_LENGTH, np.int32)
    ids[:len(words)] = [_INDEX[w] for w in words[:MAX_LENGTH]]
    return ids


def decode(tokens) -> str:
    """Token ids back to text (padding dropped)."""
    return " ".join(VOCAB[int(t)] for t in np.asarray(tokens) if int(t) > 0)


def generate(num_examples: int, seed: int = 0, split: str = "train"):
    """Yields ``(index, example)``: ``tokens`` int32 [MAX_LENGTH], ``sentiment`` (0/1), ``topic``, ``id``."""
    for i in range(num_examples):
        rng = np.random.default_rng([seed, SPLITS[split], i])
        words, sentiment, topic = review(rng)  # the grammar's labels, then the annotators' noise
        if rng.random() < SENTIMENT_NOISE:
            sentiment = 1 - sentiment
        if rng.random() < TOPIC_NOISE:
            topic = (topic + int(rng.integers(1, len(TOPICS)))) % len(TOPICS)
        yield i, {"id": i, "tokens": encode(words), "sentiment": sentiment, "topic": topic}
