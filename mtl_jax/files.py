"""Writing result files so that readers never see half of one: write a temporary file, then rename.

The temporary file's name is unique (process id and a random part), so two writers of one
path never share it: the last rename wins and neither can truncate the other's file.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import uuid
from pathlib import Path
from typing import IO, Iterator

from mtl_jax.distributed import writes_files


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Yields a file to write ``path``'s new content into; renames it over ``path`` on success.

    On an error the temporary file is removed and ``path`` keeps its old content. In a run of
    several processes only process 0 writes (:func:`mtl_jax.distributed.writes_files`): the
    others' content goes nowhere.
    """
    if not writes_files():
        yield io.BytesIO() if "b" in mode else io.StringIO()
        return
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, value) -> None:
    """Writes ``value`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    with atomic_write(path) as file:
        file.write(json.dumps(value, indent=1, default=list))
