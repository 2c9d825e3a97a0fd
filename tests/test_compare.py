"""``mtl-jax compare`` (mtl_jax/compare/): a grid, its single-task baselines, the results table."""
import csv
import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mtl_jax import experiment
from mtl_jax.compare import compare, plan
from mtl_jax.compare.intervals import average_ranks, summarise
from mtl_jax.metrics import delta_m

BASE = Path("experiments/configs/houses_mtl.py").resolve()
TINY = ["data.train_size=64", "data.validation_size=16", "data.test_size=32", "epochs=2", "batch_size=32",
        "model=mlp", "model_kwargs.features=(16,)", "head_hidden=()", "best_metric=", "tensorboard=False", "plots=False",
        "tasks={'price': {'weight': 1.0}, 'kind': {'weight': 1.0}}"]


def _write(tmp_path, axes, name="grid.py", seeds=(0, 1), overrides=TINY):
    path = tmp_path / name
    path.write_text(textwrap.dedent(f"""
        import ml_collections

        def get_config():
            config = ml_collections.ConfigDict()
            config.base = {str(BASE)!r}
            config.overrides = {list(overrides)!r}
            config.axes = {axes!r}
            config.seeds = {list(seeds)!r}
            return config
    """))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_dir):
    """A 2 methods x 2 seeds grid with its 2 x 2 single-task runs, one method failing (NaN loss);
    each cell's seeds trained together (as on a GPU)."""
    tmp_path = tmp_path_factory.mktemp("compare")
    axes = {"method": {"uw": ["weighting=uw"], "diverges": ["weighting=equal", "learning_rate=1e30"]}}
    path = _write(tmp_path, axes)
    path.write_text(path.read_text().replace("return config", "config.seeds_at_once = 0\n    return config"))
    summary = compare(path, tmp_path / "work", progress=False, data_dir=data_dir)
    return path, tmp_path / "work", summary


def test_a_tiny_grid_writes_every_table_and_reports_a_failed_run(finished):
    _, work, summary = finished
    groups = {g.name: g for g in summary["datasets"][""]}
    assert set(groups) == {"uw", "diverges", "single-task"}
    for name in ("uw", "single-task"):
        assert groups[name].seeds == [0, 1] and set(groups[name].metrics) == {"price/rmse", "kind/accuracy"}
        assert groups[name].metrics["price/rmse"].count == 2 and groups[name].delta_m is not None
    assert groups["diverges"].seeds == [] and set(groups["diverges"].failed) == {0, 1}
    assert "non-finite" in groups["diverges"].failed[0].lower() or "nan" in groups["diverges"].failed[0].lower()
    markdown = (work / "results.md").read_text()
    assert "| method | kind/accuracy | price/rmse | delta_m%" in markdown and "## Failed runs" in markdown
    assert "method=diverges/seed0" in markdown
    rows = list(csv.DictReader(open(work / "results.csv")))
    assert {r["group"] for r in rows} == {"uw", "single-task"}
    assert (work / "delta_m.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list(csv.DictReader(open(work / "runs.csv")))) == 2 * 2 + 2 * 2


def test_delta_m_is_each_seed_against_the_single_task_means(finished):
    _, work, summary = finished
    runs = work / "runs"

    def metric(folder, key):
        return json.loads((runs / folder / "run.json").read_text())["metrics"][key]

    base = {"price/rmse": np.mean([metric(f"task=price/seed{s}", "price/rmse") for s in (0, 1)]),
            "kind/accuracy": np.mean([metric(f"task=kind/seed{s}", "kind/accuracy") for s in (0, 1)])}
    by_hand = []
    for seed in (0, 1):
        rmse, accuracy = metric(f"method=uw/seed{seed}", "price/rmse"), metric(f"method=uw/seed{seed}", "kind/accuracy")
        by_hand.append(100 / 2 * (-(rmse - base["price/rmse"]) / base["price/rmse"]
                                  + (accuracy - base["kind/accuracy"]) / base["kind/accuracy"]))
    uw = next(g for g in summary["datasets"][""] if g.name == "uw")
    assert uw.delta_m.mean == pytest.approx(np.mean(by_hand), rel=1e-9, abs=1e-9)
    assert uw.delta_m.std == pytest.approx(np.std(by_hand, ddof=1), rel=1e-9, abs=1e-9)
    single = next(g for g in summary["datasets"][""] if g.name == "single-task")
    assert single.delta_m.mean == pytest.approx(
        np.mean([delta_m({"price/rmse": metric(f"task=price/seed{s}", "price/rmse"),
                          "kind/accuracy": metric(f"task=kind/seed{s}", "kind/accuracy")}, base) for s in (0, 1)]),
        abs=1e-9)


def test_finished_runs_are_not_trained_again_and_a_changed_grid_is_refused(finished, monkeypatch, data_dir):
    path, work, summary = finished

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(experiment, "train_and_evaluate", refuse)
    with pytest.raises(FileExistsError, match="unfinished or failed run; pass --resume"):
        compare(path, work, progress=False, data_dir=data_dir)  # the failed runs need --resume
    finished_only = ["axes.method={'uw': ['weighting=uw']}"]
    again = compare(path, work, overrides=finished_only, progress=False, data_dir=data_dir)
    uw = {g.name: g for g in again["datasets"][""]}["uw"]
    assert uw.delta_m == {g.name: g for g in summary["datasets"][""]}["uw"].delta_m
    with pytest.raises(FileExistsError, match="finished with another config"):
        compare(path, work, overrides=[*finished_only, "overrides=" + repr([*TINY, "learning_rate=0.01"])],
                progress=False, data_dir=data_dir)


def test_seeds_trained_together_equal_a_run_alone_and_leave_usable_run_folders(finished, tmp_path, data_dir):
    """The fixture's grid trained each cell's two seeds as one program (seeds_at_once = 0)."""
    path, work, _ = finished
    _, grid, configs, _ = plan(path)
    uw = {run.seed: run for run in grid if dict(run.cell).get("method") == "uw"}
    together = json.loads((work / "runs" / uw[1].folder / "run.json").read_text())
    assert together["seeds_at_once"] == 2
    alone = experiment.train_and_evaluate(configs[uw[1]], tmp_path / "alone", progress=False, data_dir=data_dir)
    assert set(alone["final"]) == set(together["metrics"])
    for key, value in alone["final"].items():
        assert together["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # the folder is a run like any other: its checkpoint evaluates to its recorded test metrics
    again = experiment.evaluate_run(work / "runs" / uw[1].folder, "test", data_dir=data_dir)
    assert again == pytest.approx(together["metrics"], rel=1e-6)


def test_a_group_out_of_memory_is_halved_until_it_fits(tmp_path, monkeypatch, data_dir, capsys):
    import mtl_jax.experiment_seeds as together

    sizes = []

    def results(config, count):
        return {"final": {"price/rmse": 1.0 + config.seed, "kind/accuracy": 0.5}, "steps": 4, "seeds_at_once": count}

    def fake(configs, workdirs, **kwargs):
        sizes.append(len(configs))
        if len(configs) > 2:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 1.00GiB")
        return [results(config, len(configs)) for config in configs]

    def alone(config, workdir, **kwargs):
        sizes.append(1)
        return results(config, 1)

    monkeypatch.setattr(together, "train_and_evaluate_seeds", fake)
    monkeypatch.setattr(experiment, "train_and_evaluate", alone)
    path = _write(tmp_path, {"method": {"equal": ["weighting=equal"]}}, seeds=(0, 1, 2, 3, 4))
    path.write_text(path.read_text().replace("return config", "config.single_task = False\n"
                                                                "    config.seeds_at_once = 0\n    return config"))
    summary = compare(path, tmp_path / "work", progress=False, data_dir=data_dir)
    assert sizes == [5, 2, 3, 1, 2]  # 5 -> 2 + 3 -> 2 + (1 + 2)
    assert "ran out of memory" in capsys.readouterr().out
    assert summary["datasets"][""][0].seeds == [0, 1, 2, 3, 4]


def test_two_processes_run_a_grid_as_one_process_does_and_process_0_writes_the_tables(finished, tmp_path, data_dir):
    """``mtl-jax compare --coordinator ...`` in two processes (one CPU device each): every run
    trains over both processes' devices, the diverging one fails in both and the grid goes on;
    the run's metrics are the one-process grid's (seed 0 of the fixture; no single-task runs)."""
    import os
    import subprocess
    import sys

    from conftest import free_port

    path, work, _ = finished
    grid_path = tmp_path / "grid.py"
    grid_path.write_text(path.read_text().replace("config.seeds = [0, 1]",
                                                  "config.seeds = [0]\n    config.single_task = False"))
    env = {**os.environ, "MTL_JAX_DATA_DIR": str(data_dir),
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()}
    command = [sys.executable, "-m", "mtl_jax.cli", "compare", "--config", str(grid_path), "--workdir",
               str(tmp_path / "two"), "--quiet", "--coordinator", f"localhost:{free_port()}", "--num-processes", "2"]
    processes = [subprocess.Popen([*command, "--process-id", str(i)], cwd=Path(__file__).resolve().parents[1],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=150) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "# Comparison" in outputs[0][0] and "# Comparison" not in outputs[1][0]  # the table: process 0's
    for folder in ("method=uw/seed0",):
        two = json.loads((tmp_path / "two" / "runs" / folder / "run.json").read_text())
        one = json.loads((work / "runs" / folder / "run.json").read_text())
        for key, value in one["metrics"].items():
            assert two["metrics"][key] == pytest.approx(value, rel=1e-4, abs=1e-5), (folder, key)  # r2 near 0: abs
    assert (tmp_path / "two" / "runs" / "method=diverges/seed0" / "error.json").exists()
    assert not (tmp_path / "two" / "runs" / "method=diverges/seed0" / "run.json").exists()
    assert not list((tmp_path / "two").glob("**/.*.tmp"))
    rows = list(csv.DictReader(open(tmp_path / "two" / "results.csv")))
    assert {r["group"] for r in rows} == {"uw"}


def test_workers_sharing_a_workdir_pass_by_the_run_another_is_training(tmp_path, data_dir, capsys):
    """A second ``mtl-jax compare`` on the same workdir (simulated: another live process holds one
    run's lock, as workdir_lock leaves it) trains the rest, leaves that run alone (no error
    recorded, not refused as unfinished) and lists it as not finished; once it is free, the
    command trains only it."""
    import fcntl
    import os
    import socket

    axes = {"method": {"uw": ["weighting=uw"], "equal": ["weighting=equal"]}}
    path = _write(tmp_path, axes, seeds=(0,))
    path.write_text(path.read_text().replace("return config", "config.single_task = False\n    return config"))
    work, busy = tmp_path / "work", tmp_path / "work" / "runs" / "method=equal" / "seed0"
    busy.mkdir(parents=True)
    (busy / "history.json").write_text("{}")  # its worker's run shows (an unfinished run, were nobody on it)
    lock = os.open(busy / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(lock, json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "since": "now"}).encode())
    try:
        summary = compare(path, work, progress=False, data_dir=data_dir)
    finally:
        (busy / ".lock").unlink()
        os.close(lock)
    assert "method=equal/seed0: being trained by another process; passed by" in capsys.readouterr().out
    groups = {g.name: g for g in summary["datasets"][""]}
    assert groups["uw"].seeds == [0] and "another process is training it" in groups["equal"].failed[0]
    assert not (busy / "error.json").exists() and not (busy / "run.json").exists()
    uw_record = (work / "runs" / "method=uw" / "seed0" / "run.json").read_text()
    (busy / "history.json").unlink()  # (the simulated worker left nothing to resume)
    again = compare(path, work, progress=False, data_dir=data_dir)
    assert {g.name: g for g in again["datasets"][""]}["equal"].seeds == [0]
    assert (work / "runs" / "method=uw" / "seed0" / "run.json").read_text() == uw_record  # not trained again


def test_an_interrupted_run_is_continued_only_with_resume(tmp_path, data_dir):
    path = _write(tmp_path, {"method": {"equal": ["weighting=equal"]}}, seeds=(0,))
    work = tmp_path / "work"
    first = compare(path, work, progress=False, data_dir=data_dir)
    run = work / "runs" / "method=equal" / "seed0"
    (run / "run.json").unlink()  # as if killed after its last checkpoint, before run.json
    with pytest.raises(FileExistsError, match="pass --resume"):
        compare(path, work, progress=False, data_dir=data_dir)
    resumed = compare(path, work, resume=True, progress=False, data_dir=data_dir)
    assert resumed["datasets"][""][0].metrics == first["datasets"][""][0].metrics


def test_a_typo_anywhere_in_the_grid_is_named_before_anything_trains(tmp_path):
    path = _write(tmp_path, {"method": {"ok": ["weighting=equal"], "typo": ["weighting=uncertanty"]}})
    with pytest.raises(KeyError, match="method=typo.*uncertanty"):
        plan(path)
    assert not (tmp_path / "work").exists()


def test_seeds_at_once_is_checked_and_by_default_follows_the_device(tmp_path):
    import jax
    from mtl_jax.compare.grid import seeds_at_once

    path = _write(tmp_path, {"method": {"equal": ["weighting=equal"]}})
    for bad in ("-1", "'all'", "True"):
        with pytest.raises(ValueError, match="seeds_at_once must be"):
            plan(path, [f"seeds_at_once={bad}"])
    assert seeds_at_once(plan(path)[0]) == (1 if jax.default_backend() == "cpu" else 0)
    assert seeds_at_once(plan(path, ["seeds_at_once=3"])[0]) == 3


def test_axes_that_change_the_data_get_their_own_baselines(tmp_path):
    path = _write(tmp_path, {"size": {"small": ["data.train_size=32"], "large": ["data.train_size=64"]},
                             "method": {"equal": ["weighting=equal"]}})
    text = path.read_text().replace("return config", "config.baseline_axes = ['size']\n    return config")
    path.write_text(text)
    _, grid, configs, keys = plan(path)
    baselines = [r for r in grid if r.only_task]
    expected = {(size, task) for size in ("small", "large") for task in ("price", "kind")}
    assert {(r.dataset, r.only_task) for r in baselines} == expected
    for run in baselines:
        assert configs[run].data.train_size == (32 if run.dataset == "small" else 64)
        assert list(configs[run].tasks) == [run.only_task] and configs[run].weighting == "static"
    assert keys == {"small": ["kind/accuracy", "price/rmse"], "large": ["kind/accuracy", "price/rmse"]}


def test_the_interval_is_students_t_and_one_seed_has_none():
    s = summarise([1.0, 2.0, 3.0])
    assert (s.mean, s.std) == (2.0, 1.0)
    assert s.high - s.mean == pytest.approx(4.303 / math.sqrt(3))
    one = summarise([5.0])
    assert one.count == 1 and math.isnan(one.low) and one.text() == "5.000"
    with pytest.raises(ValueError, match="non-finite"):
        summarise([1.0, float("nan")])
    assert summarise([0.0, 1.0]).overlaps(summarise([0.9, 1.1])) and not summarise([0.0, 0.1]).overlaps(
        summarise([5.0, 5.1]))


def test_ranks_follow_each_metrics_direction_and_share_ties():
    means = {"a": {"t/rmse": 1.0, "t/accuracy": 0.9}, "b": {"t/rmse": 2.0, "t/accuracy": 0.9},
             "c": {"t/rmse": 3.0, "t/accuracy": 0.5}}
    ranks = average_ranks(means, {"t/rmse": False, "t/accuracy": True})
    assert ranks == {"a": (1 + 1.5) / 2, "b": (2 + 1.5) / 2, "c": 3.0}


@pytest.mark.parametrize("path", sorted(Path("experiments/configs").glob("compare_*.py")), ids=lambda p: p.stem)
def test_every_shipped_compare_config_plans_every_run(path):
    config, grid, configs, keys = plan(path)
    cells = [r for r in grid if r.only_task is None]
    assert len(cells) == len(list(config.seeds)) * np.prod([len(v) for v in dict(config.axes).values()])
    assert len({r.folder for r in grid}) == len(grid)  # no two runs share a folder
    assert all(keys.values())


def test_the_aggregator_axis_holds_every_registered_aggregator_at_its_levels():
    from mtl_jax.compare.grid import BASELINE_AGGREGATORS, FEATURE_ONLY_AGGREGATORS, every_aggregator
    from mtl_jax.registry import AGGREGATORS

    import mtl_jax.aggregation  # noqa: F401 - registers them
    methods = every_aggregator()
    registered = set(AGGREGATORS._entries) - set(BASELINE_AGGREGATORS)
    assert {name.split("/")[0] for name in methods} == registered | {"equal"}
    for name in registered:
        levels = {m.split("/")[1] for m in methods if m.startswith(f"{name}/")}
        assert levels == ({"feature"} if name in FEATURE_ONLY_AGGREGATORS else {"feature", "parameter"}), name
