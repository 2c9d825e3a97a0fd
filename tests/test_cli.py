"""The mtl-jax command end to end, in subprocesses: every subcommand, errors, and kill -9 + --resume."""
import json
import os
import signal
import subprocess
import sys
import time

import chex
import numpy as np
import pytest

from mtl_jax.experiment import load_run, restore_params
from mtl_jax.train.writers import read_rows

TINY = ["--set", "data.train_size=96", "--set", "data.validation_size=40", "--set", "data.test_size=40",
        "--set", "batch_size=16", "--set", "eval_batch_size=40", "--set", "log_every_steps=2"]
CONFIG = "experiments/configs/seed_cnn.py"


def _command(*args):
    return [sys.executable, "-m", "mtl_jax.cli", *map(str, args)]


def _env(data_dir):
    return {**os.environ, "MTL_JAX_DATA_DIR": str(data_dir), "JAX_PLATFORMS": "cpu"}


def _run(data_dir, *args, check=True):
    result = subprocess.run(_command(*args), env=_env(data_dir), capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"mtl-jax {' '.join(map(str, args))} failed:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("cli") / "run"
    _run(data_dir, "train", f"--config={CONFIG}", *TINY, "--config.epochs", "2", "--workdir", workdir, "--quiet")
    return workdir


def test_list_names_every_registry(data_dir):
    out = _run(data_dir, "list").stdout
    for expected in ("datasets:", "houses", "models:", "seed_cnn", "weighting methods:", "equal", "static",
                     "optimizers:", "adamw", "schedules:", "cosine"):
        assert expected in out


def test_train_writes_a_complete_workdir(trained):
    for name in ("config.json", "run_signature.json", "metrics.jsonl", "history.json", "results.json",
                 "training_progress.png", "task_weights.png"):
        assert (trained / name).is_file(), name
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    results = json.loads((trained / "results.json").read_text())
    assert results["epochs_run"] == 2 and results["best_step"] in (6, 12)
    assert set(results["final"]) >= {"price/rmse", "kind/accuracy"}
    assert json.loads((trained / "config.json").read_text())["epochs"] == 2
    # the mtl-jax command enables XLA's multi-threaded CPU convolutions, and the run records it
    from mtl_jax import cpu

    expected = "xla-multithreaded" if cpu._jaxlib_version() in cpu.KNOWN_JAXLIB else "mtl_jax"
    assert json.loads((trained / "run_signature.json").read_text())["convolution"] == expected


def test_eval_reports_the_best_checkpoints_metrics(trained, data_dir):
    out = json.loads(_run(data_dir, "eval", "--workdir", trained).stdout)
    assert out == json.loads((trained / "results.json").read_text())["best"]
    latest = json.loads(_run(data_dir, "eval", "--workdir", trained, "--checkpoint", "latest",
                             "--split", "validation").stdout)
    assert latest["price/rmse"] == json.loads((trained / "history.json").read_text())["validation/price/rmse"][-1]
    assert (trained / "eval_validation.json").is_file()


def test_predict_writes_csv_and_npz(trained, data_dir, tmp_path):
    import csv

    from mtl_jax.data import load_houses

    _run(data_dir, "predict", "--workdir", trained, "--output", tmp_path / "p.csv")
    with open(tmp_path / "p.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert list(rows[0]) == ["index", "kind_label", "kind_class", "kind_prob_0", "kind_prob_1", "kind_prob_2",
                             "kind_true", "kind_true_class", "price", "price_true"]  # tasks by name
    assert len(rows) == 40
    kinds = ("cottage", "modern", "dome")
    test = load_houses(train_size=96, validation_size=40, test_size=40, data_dir=data_dir)["test"]
    for i, row in enumerate(rows):
        assert row["kind_class"] == kinds[int(row["kind_label"])] and row["kind_true_class"] == kinds[int(row["kind_true"])]
        assert int(row["kind_true"]) == test["kind"][i] and float(row["price_true"]) == pytest.approx(test["price"][i])
        assert sum(float(row[f"kind_prob_{c}"]) for c in range(3)) == pytest.approx(1.0, abs=1e-5)
    _run(data_dir, "predict", "--workdir", trained, "--output", tmp_path / "p.npz", "--split", "validation")
    with np.load(tmp_path / "p.npz") as npz:
        assert sorted(npz.files) == ["kind/labels", "kind/probabilities", "kind/true", "price/true", "price/values"]
        assert npz["kind/probabilities"].shape == (40, 3)
        assert npz["price/values"].shape == (40,)
    np.save(tmp_path / "x.npy", test["image"][:3])
    _run(data_dir, "predict", "--workdir", trained, "--output", tmp_path / "inputs.csv", "--inputs", tmp_path / "x.npy")
    with open(tmp_path / "inputs.csv", newline="") as file:
        header = next(csv.reader(file))
    assert "kind_true" not in header and "kind_class" in header  # no targets beside given inputs


@pytest.mark.filterwarnings("ignore:resuming .* with a changed config")
def test_user_errors_are_one_clear_line(trained, data_dir, tmp_path, monkeypatch, capsys):
    """Each mistake ends `mtl-jax` with status 2 and one line naming it, no traceback (run in this
    process through the command's own entry point, mtl_jax.cli.main: the other tests here start
    the command as a program)."""
    from mtl_jax import cli

    monkeypatch.setenv("MTL_JAX_DATA_DIR", str(data_dir))
    cases = [
        (["train", "--config", CONFIG, "--config.epoch=3", "--workdir", tmp_path / "a"],
         "unknown config key 'epoch'; did you mean 'epochs'?"),
        (["train", "--config", CONFIG, "--set", "model=vgg", "--workdir", tmp_path / "b"], "unknown model 'vgg'"),
        (["train", "--config", CONFIG, *TINY, "--workdir", trained], "pass --resume to continue it"),
        (["train", "--config", CONFIG, *TINY, "--set", "head_hidden=(32,)", "--workdir", trained, "--resume"],
         "cannot resume"),
        (["eval", "--workdir", tmp_path / "none"], "a workdir made by 'mtl-jax train'"),
        (["predict", "--workdir", trained, "--output", tmp_path / "p.txt"], "as .csv or .npz"),
    ]
    for args, message in cases:
        with pytest.raises(SystemExit) as exit_:
            cli.main([str(arg) for arg in args])
        stderr = capsys.readouterr().err
        assert exit_.value.code == 2, (args, stderr[-2000:])
        assert "mtl-jax: error: " in stderr and message in stderr, (message, stderr[-2000:])
        assert "Traceback" not in stderr


def _wait_for_checkpoint(process, workdir, timeout=300):
    start = time.time()
    while time.time() - start < timeout:
        if process.poll() is not None:
            raise AssertionError(f"the run ended (code {process.returncode}) before it could be killed")
        steps = [p.name for p in (workdir / "checkpoints").glob("*") if p.name.isdigit()] \
            if (workdir / "checkpoints").exists() else []
        if steps:
            return
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.long
def test_a_run_killed_with_sigkill_and_resumed_equals_an_uninterrupted_run(tmp_path, data_dir):
    args = ["--config", CONFIG, *TINY, "--set", "epochs=8", "--set", "checkpoint_every_steps=5", "--set", "plots=False",
            "--quiet"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    _run(data_dir, "train", *args, "--workdir", whole)

    process = subprocess.Popen(_command("train", *args, "--workdir", broken), env=_env(data_dir),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_checkpoint(process, broken)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (broken / "results.json").exists()
    _run(data_dir, "train", *args, "--workdir", broken, "--resume")

    for name in ("results.json", "history.json"):
        assert json.loads((broken / name).read_text()) == json.loads((whole / name).read_text()), name
    assert read_rows(broken / "metrics.jsonl") == read_rows(whole / "metrics.jsonl")
    experiment = load_run(whole)
    for which in ("latest", "best"):
        step_a, params_a, _ = restore_params(experiment, whole, which)
        step_b, params_b, _ = restore_params(experiment, broken, which)
        assert step_a == step_b
        chex.assert_trees_all_equal(params_a, params_b)


def test_the_shipped_catalog_is_the_registries():
    """`mtl-jax list` and the early name checks read mtl_jax/catalog.json: it must list exactly what
    the registries hold (if this fails, run `python -m mtl_jax.catalog`)."""
    from mtl_jax import catalog

    assert json.loads(catalog.CATALOG_FILE.read_text()) == catalog.live()


def test_a_misspelt_method_is_named_before_jax_and_a_user_registered_one_is_accepted(tmp_path):
    from mtl_jax import catalog
    from mtl_jax.config import load_config
    from mtl_jax.registry import WEIGHTINGS

    config = load_config("experiments/configs/seed_cnn.py", ["weighting=uncertanty"])
    with pytest.raises(KeyError, match="unknown weighting method 'uncertanty'; did you mean 'uncertainty'"):
        catalog.check_names(config)
    catalog.check_names(load_config("experiments/configs/seed_cnn.py", ["weighting=UW", "model=none",
                                                                         "aggregator=none"]))
    WEIGHTINGS.register("my_own_weighting_for_this_test", "a user's method")(lambda tasks: None)
    catalog.check_names(load_config("experiments/configs/seed_cnn.py", ["weighting=my_own_weighting_for_this_test"]))


def test_help_argument_and_config_errors_answer_without_importing_jax():
    """Fast start: mtl-jax --help and list, a misspelt subcommand, method or config key never wait for JAX
    (imports are lazy; `python -X importtime -m mtl_jax.cli --help` shows what is left)."""
    code = ("import sys\nfrom mtl_jax import cli\n"
            "for argv in (['--help'], ['trian'], ['train', '--config', 'experiments/configs/seed_cnn.py',"
            " '--config.epoch=3', '--workdir', 'x'], ['config', '--config', 'experiments/configs/seed_cnn.py'],"
            " ['list'], ['train', '--config', 'experiments/configs/seed_cnn.py', '--config.weighting=uncertanty',"
            " '--workdir', 'x']):\n"
            "    try:\n        cli.run(argv)\n    except (SystemExit, KeyError):\n        pass\n"
            "print(sorted(m for m in ('jax', 'flax', 'tensorflow_datasets', 'optax') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout[-2000:]
