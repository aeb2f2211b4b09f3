"""Execute a notebook in a real kernel and report its first error (for lab tests)."""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class FirstError:
    ename: str
    evalue: str
    cell_source: str


def run(nb: dict, cwd: Path, timeout: int = 120, env: dict | None = None) -> FirstError | None:
    """Run ``nb`` top to bottom; None when every cell succeeds, else the first error."""
    node = nbformat.reads(json.dumps(nb), as_version=4)  # joins sources stored as lists of lines
    client = NotebookClient(node, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}})
    old = dict(os.environ)
    os.environ.update(env or {})
    try:
        client.execute()
    except CellExecutionError as exc:
        for cell in node.cells:
            for out in cell.get("outputs", []):
                if out.get("output_type") == "error":
                    return FirstError(out["ename"], out["evalue"], cell.source)
        return FirstError(exc.ename, exc.evalue, "")
    finally:
        os.environ.clear()
        os.environ.update(old)
    return None


def cut_after_check(nb: dict, ex_id: str) -> dict:
    """The notebook up to and including the cell that checks ``ex_id`` (saves running the rest)."""
    nb = copy.deepcopy(nb)
    for i, cell in enumerate(nb["cells"]):
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and (f'check("{ex_id}"' in src or f"check('{ex_id}'" in src):
            nb["cells"] = nb["cells"][: i + 1]
            return nb
    raise AssertionError(f"no cell calls check({ex_id!r})")
