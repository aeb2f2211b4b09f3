"""Labs are generated from solutions: ``python -m natslab.labs`` (``--check`` to verify).

In ``solutions/*.ipynb`` each answer sits between two marker lines::

    # BEGIN SOLUTION 1.3
    ...the answer...
    # END SOLUTION

``labs/`` gets the same notebook with each region replaced by a stub that raises
``NotImplementedError`` at the region's indentation, cells tagged ``solution-only`` dropped,
and outputs cleared.  ``--check`` exits non-zero when a lab differs from what its solution
generates, so CI catches a stale lab.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[2]
BEGIN = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION (?P<id>\d+\.\d+)\s*$")
END = re.compile(r"^[ \t]*# END SOLUTION\s*$")
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}


def stub(indent: str, ex_id: str) -> list[str]:
    return [f"{indent}# YOUR CODE HERE (exercise {ex_id})\n",
            f'{indent}raise NotImplementedError("exercise {ex_id} is not solved yet")\n']


def blank_source(source: str, only: str | None = None) -> tuple[str, list[str]]:
    """Replace solution regions (all, or only exercise ``only``); returns text and ids seen."""
    out: list[str] = []
    ids: list[str] = []
    lines = source.splitlines(keepends=True)
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i].rstrip("\n"))
        if not m:
            if END.match(lines[i].rstrip("\n")):
                raise ValueError(f"'# END SOLUTION' without a BEGIN: {lines[i]!r}")
            out.append(lines[i])
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not END.match(lines[j].rstrip("\n")):
            if BEGIN.match(lines[j].rstrip("\n")):
                raise ValueError(f"nested BEGIN SOLUTION in region {m['id']}")
            j += 1
        if j == len(lines):
            raise ValueError(f"BEGIN SOLUTION {m['id']} has no END SOLUTION")
        ids.append(m["id"])
        if only is None or only == m["id"]:
            out += stub(m["indent"], m["id"])
        else:
            out += lines[i + 1:j]
        i = j + 1
    text = "".join(out)
    return (text[:-1] if text.endswith("\n") and not source.endswith("\n") else text), ids


def clean(nb: dict) -> dict:
    """Outputs, execution counts and widget state removed; the python3 kernelspec set."""
    nb = copy.deepcopy(nb)
    nb.setdefault("metadata", {})["kernelspec"] = dict(KERNELSPEC)
    nb["metadata"].pop("widgets", None)
    nb["metadata"].setdefault("language_info", {"name": "python"})
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        if cell["cell_type"] == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


def _source(cell) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def make_lab(solution: dict, only: str | None = None, keep_solution_cells: bool = False) -> dict:
    nb = clean(solution)
    cells = []
    for cell in nb["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "solution-only" in tags and not keep_solution_cells:
            continue
        if cell["cell_type"] == "code":
            cell["source"] = blank_source(_source(cell), only)[0]
        cells.append(cell)
    nb["cells"] = cells
    return nb


def exercise_ids(solution: dict) -> list[str]:
    ids: list[str] = []
    for cell in solution["cells"]:
        if cell["cell_type"] == "code":
            for i in blank_source(_source(cell))[1]:
                if i not in ids:
                    ids.append(i)
    return ids


def dumps(nb: dict) -> str:
    """The notebook as Jupyter writes it (nbformat: sources as lists of lines, so diffs read line by line)."""
    text = nbformat.writes(nbformat.from_dict(nb), version=4)
    return text if text.endswith("\n") else text + "\n"


def lab_path_for(solution_path: Path, root: Path = ROOT) -> Path:
    return root / "labs" / solution_path.name


def generate(root: Path = ROOT, check_only: bool = False) -> list[str]:
    """Write (or with ``check_only`` compare) every lab; returns the names that differ."""
    stale = []
    for sol in sorted((root / "solutions").glob("*.ipynb")):
        want = dumps(make_lab(json.loads(sol.read_text())))
        lab = lab_path_for(sol, root)
        have = lab.read_text() if lab.exists() else None
        if have != want:
            stale.append(lab.relative_to(root).as_posix())
            if not check_only:
                lab.parent.mkdir(exist_ok=True)
                lab.write_text(want)
    if check_only:
        sols = {p.name for p in (root / "solutions").glob("*.ipynb")}
        stale += [f"labs/{p.name} (no solution)" for p in (root / "labs").glob("*.ipynb") if p.name not in sols]
    return stale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only verify that labs/ is up to date")
    args = ap.parse_args(argv)
    stale = generate(check_only=args.check)
    if args.check:
        if stale:
            print("labs/ is stale; run `python -m natslab.labs` and commit:\n  " + "\n  ".join(stale))
            return 1
        print("labs/ matches solutions/.")
        return 0
    print("regenerated: " + (", ".join(stale) if stale else "nothing changed"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
