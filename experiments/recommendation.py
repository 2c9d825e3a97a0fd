"""The recommendation example: click + conversion with hard sharing, MMoE and PLE, compared.

Trains ``experiments/configs/clicks_{hard,mmoe,ple}.py`` on the generated ``clicks`` data
(shared user/item embeddings; conversion observed only after a click), each into
``<workdir>/<architecture>``, evaluates the best checkpoint (by validation conversion
log-loss) on the test split and writes ``<workdir>/comparison.json`` and ``comparison.md``:
per-task AUC and log-loss, plus each task's mean gate weight per expert for MMoE and PLE
(which experts each task relies on).

    python experiments/recommendation.py [--workdir runs/recommendation] [--epochs 8] [--train-size 30000]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import jax
import numpy as np

from mtl_jax.config import load_config
from mtl_jax.data.sources import head, num_examples
from mtl_jax.experiment import load_run, restore_params, train_and_evaluate
from mtl_jax.files import write_json
from mtl_jax.models.experts import gate_weights

CONFIGS = Path(__file__).resolve().parent / "configs"
ARCHITECTURES = ("hard", "mmoe", "ple")


def mean_gates(workdir: Path, data_dir: str | None = None) -> dict[str, list[float]]:
    """Each task's gate weights averaged over the test split (best checkpoint)."""
    experiment = load_run(workdir, data_dir)
    params = restore_params(experiment, workdir, "best").params
    test = experiment.data["test"]  # a record source (configs stream) or arrays
    inputs = head(test, num_examples(test))[experiment.spec.input_key]
    gates = jax.device_get(gate_weights(experiment.model, params, inputs))
    return {name[len("gate_"):]: np.asarray(value, np.float64).mean(axis=0).round(3).tolist()
            for name, value in gates.items() if name.startswith("gate_")}


def run(workdir: str, epochs: int = 8, train_size: int = 30000, architectures=ARCHITECTURES,
        progress: bool | None = None, data_dir: str | None = None, resume: bool = False) -> dict:
    overrides = [f"epochs={epochs}", f"data.train_size={train_size}"]
    comparison = {}
    for architecture in architectures:
        out = Path(workdir) / architecture
        config = load_config(CONFIGS / f"clicks_{architecture}.py", overrides)
        results = train_and_evaluate(config, out, resume=resume, progress=progress, data_dir=data_dir)
        test = results.get("best", results["final"])
        comparison[architecture] = {
            "test": {key: test[key] for key in ("click/auc", "click/log_loss", "conversion/auc",
                                                "conversion/log_loss")},
            "best_step": results.get("best_step"),
            "gates": mean_gates(out, data_dir) if architecture != "hard" else None}
    write_json(Path(workdir) / "comparison.json", comparison)
    (Path(workdir) / "comparison.md").write_text(table(comparison))
    return comparison


def table(comparison: dict) -> str:
    lines = ["| architecture | click AUC | click log-loss | conversion AUC | conversion log-loss |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in comparison.items():
        t = row["test"]
        lines.append(f"| {name} | {t['click/auc']:.3f} | {t['click/log_loss']:.3f} | {t['conversion/auc']:.3f} | "
                     f"{t['conversion/log_loss']:.3f} |")
    for name, row in comparison.items():
        for task, weights in (row["gates"] or {}).items():
            lines.append(f"\n{name} gate of {task} (mean weight per expert): {weights}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/recommendation")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-size", type=int, default=30000)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    comparison = run(args.workdir, epochs=args.epochs, train_size=args.train_size, resume=args.resume)
    print(table(comparison))


if __name__ == "__main__":
    main()
