"""The seed's example: one CNN, a price regression head and a house-type head.

conv3x3(32)-ReLU-pool, conv3x3(64)-ReLU-pool, flatten; heads ``price`` (MSE, reported
as RMSE) and ``kind`` (3 classes, cross-entropy, reported as accuracy); total loss
``mse + 0.5 * ce``; Adam; 10 epochs, shuffled every epoch; validation after each epoch.
Prints the test metrics and writes ``<workdir>/training_progress.png``.

    python experiments/seed_cnn.py [--workdir runs/seed_cnn] [--epochs 10] [--train-size 3000]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import optax

import mtl_jax as mtl
from mtl_jax.data import load_houses
from mtl_jax.models import SeedCNN, hard_sharing


def run(workdir: str, epochs: int = 10, train_size: int = 3000, validation_size: int = 500,
        test_size: int = 1000, batch_size: int = 64, learning_rate: float = 1e-3, seed: int = 0,
        progress: bool | None = None, data_dir: str | None = None) -> dict:
    """Trains the seed model and returns its test metrics (also written to ``metrics.json``)."""
    data = load_houses(train_size, validation_size, test_size, data_dir=data_dir)
    tasks = [mtl.regression("price", weight=1.0), mtl.classification("kind", 3, weight=0.5)]
    model = hard_sharing(SeedCNN(), tasks, head_hidden=(64,))
    state, history = mtl.fit(model, tasks, data["train"], validation=data["validation"], epochs=epochs,
                             batch_size=batch_size, optimizer=optax.adam(learning_rate), seed=seed,
                             progress=progress)
    test = mtl.evaluate(model, tasks, state.params, data["test"])
    out = Path(workdir)
    out.mkdir(parents=True, exist_ok=True)
    mtl.plot_history(history, tasks, out / "training_progress.png")
    result = {"test": test, "test_price_std": float(np.std(data["test"]["price"])), "history": history}
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out / "metrics.json")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/seed_cnn")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    result = run(args.workdir, epochs=args.epochs, train_size=args.train_size, seed=args.seed)
    test, std = result["test"], result["test_price_std"]
    print(f"test price RMSE {test['price/rmse']:.3f} ($100k; test price std {std:.3f}, "
          f"ratio {test['price/rmse'] / std:.2f})")
    print(f"test kind accuracy {test['kind/accuracy']:.3f}")
    print(f"wrote {Path(args.workdir) / 'training_progress.png'} in {time.time() - start:.0f} s")
    met = test["kind/accuracy"] >= 0.9 and test["price/rmse"] <= 0.5 * std
    print("targets (accuracy >= 0.9, RMSE <= 0.5 x price std):", "met" if met else "NOT met")


if __name__ == "__main__":
    main()
