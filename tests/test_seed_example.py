"""experiments/seed_cnn.py as `make demo` runs it."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_example():
    spec = importlib.util.spec_from_file_location("seed_cnn", ROOT / "experiments" / "seed_cnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.long
def test_seed_example_meets_its_targets_and_writes_its_outputs(tmp_path, data_dir):
    """The seed example as `make demo` runs it: both tasks learn, test accuracy >= 0.9 and
    RMSE <= 0.5 std, and the plot and metrics file are written (atomically). The splits are read
    into memory here (`make demo` streams them: the same run bitwise, tests/test_sources.py),
    which spares the suite the reading thread's share of the two cores."""
    result = _load_example().run(str(tmp_path), progress=False, data_dir=data_dir, in_memory=True)
    history, test = result["history"], result["test"]
    assert history["epoch"] == list(range(1, 11))
    for key in ("train/price/loss", "train/kind/loss", "validation/price/loss", "validation/kind/loss"):
        assert history[key][-1] < history[key][0], (key, history[key])
    assert test["kind/accuracy"] >= 0.9, test
    assert test["price/rmse"] <= 0.5 * result["test_price_std"], (test, result["test_price_std"])
    assert (tmp_path / "training_progress.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert np.isclose(saved["test"]["price/rmse"], test["price/rmse"])
    assert not list(tmp_path.glob("*.tmp"))
