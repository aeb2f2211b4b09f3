"""Build the course site: every lesson executed against real servers, rendered to static HTML.

    ./course site                                         # every lesson -> site/_build/html
    .venv/bin/python site/build.py 00_welcome 01_3_queue_groups --out /tmp/site

Each lesson runs top to bottom in a fresh python3 kernel (nbclient) on natslab's local backend, so
the pages show the outputs, tables and plots that real nats-server instances produced; nbconvert's
HTML exporter renders them (plots embedded as images, widgets in their last state).  Offline from
PyPI packages only: no theme or template is downloaded.  site/site.json is the configuration,
site/index.md the text of the front page.  A lesson that raises (outside a cell tagged
raises-exception) or runs past its time limit fails the build: its page is still written, with the
error, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime
import html
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import mistune
import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = json.loads((HERE / "site.json").read_text())

CSS = """
<style>
.natslab-nav { font-family: system-ui, sans-serif; display: flex; gap: 1.5em; padding: .6em 1em;
  background: #f3f5f7; border-bottom: 1px solid #d0d7de; margin-bottom: 1em; }
.natslab-nav.bottom { border-top: 1px solid #d0d7de; border-bottom: none; margin: 2em 0 0 0; }
.natslab-nav a { color: #0b5cad; text-decoration: none; }
.natslab-nav .next { margin-left: auto; }
.natslab-index { font-family: system-ui, sans-serif; max-width: 52em; margin: 2em auto; padding: 0 1em;
  line-height: 1.5; }
.natslab-index code { background: #f3f5f7; padding: 0 .2em; }
.natslab-index footer { color: #57606a; font-size: .9em; margin-top: 3em; }
</style>
"""


class BuildError(Exception):
    """A lesson that could not be built (bad name, error in a cell, time limit)."""


def lesson_paths(names: list[str]) -> list[Path]:
    """The lessons to build: all of them, or the ones named (a stem like 01_3_queue_groups, or a path)."""
    if not names:
        return sorted(ROOT.glob(CONFIG["lessons"]))
    paths = []
    for name in names:
        path = Path(name)
        if path.suffix != ".ipynb":
            path = ROOT / "notebooks" / f"{name}.ipynb"
        if not path.is_file():
            raise BuildError(f"no lesson {name!r} (expected {path}); lessons are notebooks/NN_*.ipynb stems")
        paths.append(path.resolve())
    return paths


def title_of(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return "untitled"


def cell_errors(nb) -> list[str]:
    """Errors in cells not tagged raises-exception (the ones nbval would fail on)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                found.append(f"cell {i}: {out.get('ename')}: {out.get('evalue')}")
    return found


def execute(path: Path, cell_timeout: int, notebook_timeout: int):
    """Run the notebook in a fresh kernel; the executed notebook and the errors it showed."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": str(path.parent)}})
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(client.async_execute(), notebook_timeout))
    except Exception as exc:  # the time limit, a cell timeout, a dead kernel: the page shows what ran
        if isinstance(exc, asyncio.TimeoutError) or time.monotonic() - started >= notebook_timeout:
            # (stopping the kernel at the limit can surface as nbclient's DeadKernelError)
            return nb, [f"the lesson ran past its time limit ({notebook_timeout} s); its kernel was stopped"]
        return nb, [f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"]
    return nb, cell_errors(nb)


def nav(prev: tuple[str, str] | None, nxt: tuple[str, str] | None, where: str) -> str:
    parts = ['<a href="index.html">Contents</a>']
    if prev:
        parts.append(f'<a href="{prev[0]}.html">&larr; {html.escape(prev[1])}</a>')
    if nxt:
        parts.append(f'<a class="next" href="{nxt[0]}.html">{html.escape(nxt[1])} &rarr;</a>')
    return f'<nav class="natslab-nav {where}">{" ".join(parts)}</nav>'


def link_pages(body: str, built: set[str]) -> str:
    """Links between lessons point at their pages (X.ipynb -> X.html) when the page is built."""
    def swap(m: re.Match) -> str:
        stem = m.group(1)
        return f'href="{stem}.html{m.group(2) or ""}"' if stem in built else m.group(0)
    return re.sub(r'href="(?:\./)?(?:\.\./notebooks/)?([\w.-]+)\.ipynb(#[^"]*)?"', swap, body)


def render(nb, prev, nxt, built: set[str]) -> str:
    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nb)
    body = link_pages(body, built)
    body = re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + nav(prev, nxt, "top"), body, count=1)
    body = body.replace("</head>", CSS + "</head>", 1)
    return body.replace("</body>", nav(prev, nxt, "bottom") + "</body>", 1)


def index_page(lessons: list[tuple[str, str]], backend: str) -> str:
    intro = mistune.html((HERE / "index.md").read_text())
    rows, module = [], None
    for stem, title in lessons:
        if stem[:2] != module:
            if module is not None:
                rows.append("</ul>")
            module = stem[:2]
            rows.append(f"<h2>{module} &middot; {html.escape(CONFIG['modules'].get(module, 'Module ' + module))}</h2><ul>")
        rows.append(f'<li><a href="{stem}.html">{html.escape(title)}</a></li>')
    if rows:
        rows.append("</ul>")
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(CONFIG['title'])}</title>"
            f"{CSS}</head><body><main class='natslab-index'>{intro}{''.join(rows)}"
            f"<footer>Built {when}; every lesson executed on natslab's {backend} backend.</footer>"
            "</main></body></html>")


def build(names: list[str], out: Path, cell_timeout: int, notebook_timeout: int) -> int:
    paths = lesson_paths(names)
    out.mkdir(parents=True, exist_ok=True)
    backend = CONFIG["backend"]
    os.environ["NATSLAB_BACKEND"] = backend  # the kernels inherit it
    failures: dict[str, list[str]] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="natslab-site-") as tmp:
        # the build's checks and hints go to a throw-away progress file, not the author's own
        os.environ["NATSLAB_PROGRESS"] = str(Path(tmp) / "progress.json")
        executed = []
        for path in paths:
            t0 = time.monotonic()
            print(f"==> {path.stem}: executing on the {backend} backend", flush=True)
            nb, errors = execute(path, cell_timeout, notebook_timeout)
            print(f"    {time.monotonic() - t0:.0f} s" + (f", {len(errors)} error(s)" if errors else ""), flush=True)
            if errors:
                failures[path.stem] = errors
            executed.append((path.stem, title_of(nb), nb))
    built = {stem for stem, _, _ in executed}
    for i, (stem, title, nb) in enumerate(executed):
        prev = executed[i - 1][:2] if i > 0 else None
        nxt = executed[i + 1][:2] if i + 1 < len(executed) else None
        (out / f"{stem}.html").write_text(render(nb, prev, nxt, built), encoding="utf-8")
    (out / "index.html").write_text(index_page([e[:2] for e in executed], backend), encoding="utf-8")
    (out / ".nojekyll").write_text("")
    print(f"==> site: {len(executed)} lesson(s) in {out} ({time.monotonic() - started:.0f} s)")
    if failures:
        for stem, errors in failures.items():
            print(f"!! {stem} failed:", *errors, sep="\n   ", file=sys.stderr)
        print(f"!! the site build FAILED: {len(failures)} lesson(s) raised (pages written with the error)",
              file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("lessons", nargs="*", help="lesson stems or notebook paths (default: every lesson)")
    parser.add_argument("--out", type=Path, default=ROOT / CONFIG["out"], help="output folder")
    parser.add_argument("--cell-timeout", type=int, default=CONFIG["cell_timeout_s"])
    parser.add_argument("--notebook-timeout", type=int, default=CONFIG["notebook_timeout_s"])
    args = parser.parse_args(argv)
    try:
        return build(args.lessons, args.out.resolve(), args.cell_timeout, args.notebook_timeout)
    except BuildError as exc:
        print(f"site: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
