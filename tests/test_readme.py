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
