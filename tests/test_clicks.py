"""The generated recommendation data and the click + conversion example (hard sharing, MMoE, PLE)."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from mtl_jax.config import load_config
from mtl_jax.data import clicks, load_clicks
from mtl_jax.experiment import train_and_evaluate


@pytest.fixture(scope="module")
def tiny_clicks(data_dir):
    return load_clicks(train_size=400, validation_size=100, test_size=200, seed=0, data_dir=data_dir)


def test_splits_have_sizes_fields_in_range_and_conversions_only_after_clicks(tiny_clicks):
    assert {k: len(v["click"]) for k, v in tiny_clicks.items()} == {"train": 400, "validation": 100, "test": 200}
    for split in tiny_clicks.values():
        fields = split["fields"]
        assert fields.shape[1] == len(clicks.FIELDS) and fields.dtype == np.int32
        assert (fields >= 0).all() and (fields < np.asarray(clicks.VOCAB_SIZES)).all()
        click, conversion = split["click"], split["conversion"]
        assert set(np.unique(click)) == {0, 1}
        np.testing.assert_array_equal(conversion == -1, click == 0)  # observed exactly on clicked impressions
        np.testing.assert_array_equal(split["purchase"], click * (conversion == 1))
    world = clicks.world(0)  # segment and category columns are functions of the user and the item
    train = tiny_clicks["train"]["fields"]
    np.testing.assert_array_equal(train[:, 2], world["segment"][train[:, 0]])
    np.testing.assert_array_equal(train[:, 3], world["category"][train[:, 1]])


def test_generation_is_deterministic_and_follows_the_click_model(tiny_clicks, tmp_path):
    again = load_clicks(train_size=400, validation_size=100, test_size=200, seed=0, data_dir=tmp_path)
    for split in tiny_clicks:
        for key in tiny_clicks[split]:
            np.testing.assert_array_equal(again[split][key], tiny_clicks[split][key])
    big = clicks.impressions(40000, seed=0, split="train")
    position = big["fields"][:, 4]
    rates = [big["click"][position == p].mean() for p in range(clicks.POSITIONS)]
    assert all(a > b for a, b in zip(rates, rates[1:]))  # lower slots are clicked less
    assert 0.05 < big["click"].mean() < 0.4
    observed = big["conversion"] >= 0
    assert 0.15 < big["conversion"][observed].mean() < 0.7


def _load_example():
    path = Path("experiments/recommendation.py")
    spec = importlib.util.spec_from_file_location("recommendation", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.long
def test_the_recommendation_example_compares_hard_sharing_mmoe_and_ple(tmp_path, data_dir, monkeypatch):
    example = _load_example()
    real = example.load_config
    monkeypatch.setattr(example, "load_config", lambda path, overrides: real(
        path, [*overrides, "data.validation_size=300", "data.test_size=600", "plots=False"]))
    comparison = example.run(str(tmp_path), epochs=3, train_size=5000, progress=False, data_dir=str(data_dir))
    assert list(comparison) == ["hard", "mmoe", "ple"]
    for name, row in comparison.items():
        assert row["test"]["click/auc"] > 0.56, (name, row["test"])
        assert 0.0 < row["test"]["conversion/log_loss"] < 1.0, name
    for name, experts in (("mmoe", 4), ("ple", 2 + 2)):
        gates = comparison[name]["gates"]
        assert set(gates) == {"click", "conversion"}
        for weights in gates.values():
            assert len(weights) == experts and abs(sum(weights) - 1.0) < 1e-2
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["mmoe"]["test"] == comparison["mmoe"]["test"]
    assert "| ple |" in (tmp_path / "comparison.md").read_text()


def test_a_columns_config_with_a_trace_norm_penalty_trains_and_logs_it(tmp_path, data_dir):
    config = load_config("experiments/configs/clicks_columns.py", [
        "data.train_size=300", "data.validation_size=100", "data.test_size=100", "epochs=2", "plots=False"])
    results = train_and_evaluate(config, tmp_path, progress=False, data_dir=data_dir)
    assert np.isfinite(results["final"]["click/log_loss"])
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["train/penalty"]) == 2 and history["train/penalty"][1] > 0
