"""Writing result files so that readers never see half of one: write a temporary file, then rename."""
from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: str | Path, value) -> None:
    """Writes ``value`` as JSON to ``path`` atomically (a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=1, default=list))
    os.replace(tmp, path)
