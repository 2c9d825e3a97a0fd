"""Runs the README's Python example (on a small dataset, one epoch) so the docs stay true."""
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs(data_dir, tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    small = f"load_houses(train_size=64, validation_size=16, test_size=16, data_dir={str(data_dir)!r})"
    assert "load_houses()" in code and "epochs=10" in code
    code = code.replace("load_houses()", small).replace("epochs=10", "epochs=1, progress=False")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "training_progress.png").exists()


def test_readme_architecture_example_runs(data_dir):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "load_clicks()" in block)
    small = f"load_clicks(train_size=512, validation_size=128, test_size=128, data_dir={str(data_dir)!r})"
    assert code.count("epochs=8") == 2
    code = code.replace("load_clicks()", small).replace("epochs=8", "epochs=1, progress=False")
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["gates"]["gate_click"].shape == (128, 4)
    assert len(namespace["history"]["train/penalty"]) == 1


def test_readme_custom_loop_example_runs(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "def train_step" in block)
    assert "range(300)" in code
    namespace = {}
    exec(compile(code.replace("range(300)", "range(60)"), "README.md", "exec"), namespace)
    model, x, y, label = (namespace[k] for k in ("model", "x", "y", "label"))
    first = namespace["task_losses"](model.init(namespace["jax"].random.PRNGKey(1), x)["params"], x, y, label)
    final = namespace["losses"]
    assert (final < 0.7 * first).all(), (first, final)
    state = namespace["method_state"]
    assert len(state) == 3  # one state per piece of the chain


def test_readme_tfds_on_disk_example_streams_and_runs_its_hook(data_dir, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "builder_from_directory" in block)
    small = 'load_houses(train_size=48, validation_size=16, test_size=16, data_dir="tfds_data")'
    assert 'load_houses(data_dir="tfds_data")' in code and "epochs=2" in code
    code = code.replace('load_houses(data_dir="tfds_data")', small).replace("epochs=2", "epochs=2, batch_size=16, "
                                                                               "progress=False")
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    history = namespace["history"]
    assert len(history["train/loss_ratio"]) == 2 and all(r > 0 for r in history["train/loss_ratio"])
    assert "train/loss_ratio" in (tmp_path / "runs/streamed/metrics.jsonl").read_text()
    assert type(namespace["train"].source).__name__ == "ArrayRecordDataSource"  # streamed, not read whole


def _shell_commands():
    """Every command of the README's ``bash`` blocks: continuation lines joined, comments and
    ``[optional]`` parts dropped, ``a|b`` alternatives reduced to the first."""
    import shlex

    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\[[^\]]*\]", "", line.split("  #")[0]).strip()
            if line:
                yield [re.sub(r"\|[^\s]*", "", word) for word in shlex.split(line)]


def test_every_readme_command_works_as_written_after_make_demo():
    """What a new user pastes: make targets that exist, `. .venv/bin/activate` where `make demo`
    makes the venv, scripts that exist, and mtl-jax commands whose subcommand, flags, config
    file and every config override and name the CLI accepts (checked without training)."""
    from mtl_jax import experiment
    from mtl_jax.cli import _parser, config_flags
    from mtl_jax.config import load_config

    root = README.parent
    makefile = (root / "Makefile").read_text()
    commands = list(_shell_commands())
    assert any(c[0] == "mtl-jax" for c in commands) and any(c[0] == "make" for c in commands)
    for command in commands:
        if command[0] == "make":
            assert re.search(rf"^{command[1]}:", makefile, re.M), command
        elif command[0] == ".":
            venv = re.search(r"^VENV \?= (\S+)", makefile, re.M).group(1)
            assert command[1] == f"{venv}/bin/activate", command
        elif command[0] in ("python", "python3"):
            assert (root / command[1]).is_file(), command
        elif command[0] == "mtl-jax":
            args = _parser().parse_args(config_flags(command[1:]))
            if args.command == "compare":
                from mtl_jax.compare import plan

                plan(root / args.config, args.overrides)
            elif getattr(args, "config", None):
                experiment.check(load_config(root / args.config, args.overrides))
        elif command[0] not in (".venv-bench/bin/pip", ".venv-bench/bin/python", "python3", "MTL_JAX_KEEP_XLA_FLAGS=1"):
            raise AssertionError(f"a README command this test does not know how to check: {command}")
