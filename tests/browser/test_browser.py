"""The course in a real browser: JupyterLab started the way `./course open` starts it, driven by headless
Debian Chromium through Playwright.

- the welcome lesson runs top to bottom with no error output, and no news pop-up covers it;
- a lesson with widgets (01.1, the subject matcher) runs top to bottom and its ipywidgets render;
- the welcome lab's first check fails (the lab ships unsolved) and shows the red verdict card;
- the error and widget detectors are shown to fail on a notebook whose cell raises and renders nothing.

Screenshots go to tests/browser/output/ (kept as CI artifacts); with NATSLAB_SCREENSHOTS=docs/screenshots
the three the README shows are written there too.  Skips, loudly, only without chromium or playwright.
JupyterLab, its kernels and every server they started are stopped at the end, and that is checked.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).resolve().parent / "output"
CHROMIUM = os.environ.get("NATSLAB_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - reported by the skip below
    sync_playwright = None

_missing = ("playwright is not installed (pip install -r requirements.txt)" if sync_playwright is None else
            f"no chromium at {CHROMIUM} (apt-get install chromium)" if not os.access(CHROMIUM, os.X_OK) else None)
pytestmark = pytest.mark.skipif(_missing is not None,
                                reason=f"!!! BROWSER TEST SKIPPED: {_missing} !!!")

# What JupyterLab shows for an error output and for a rendered ipywidget.  On screen an error output
# (a cell that raised) and a stderr stream (a warning, a logged traceback) share one mime type,
# application/vnd.jupyter.stderr; what tells them apart is IPython's traceback header, a red line of
# dashes first.  The notebook model (STATE_JS) tells them apart exactly: output_type "error".
ERROR_SELECTOR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]'
SHOWN_ERRORS_JS = """els => els.filter(e => { const s = e.querySelector('pre > span.ansi-red-fg:first-child');
  return s && /^-{20,}/.test(s.textContent); }).map(e => e.textContent.slice(0, 300))"""
STDERR_JS = "els => els.map(e => e.textContent.slice(0, 300))"
WIDGET_SELECTOR = ".jp-OutputArea-output .jupyter-widgets.widget-container, .jp-OutputArea-output .widget-text"

# Reads the open notebook's model (complete even where the DOM is windowed): the kernel status, code
# cells still queued or running, and every error output (ename: evalue).
STATE_JS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  if (!w || !w.content || !w.sessionContext) return null;
  const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
  const cells = w.content.widgets;
  const errors = [];
  let pending = 0, ran = 0, code = 0;
  for (const c of cells) {
    if (c.model.type !== 'code') continue;
    code += 1;
    if (c.promptNode && c.promptNode.textContent.includes('*')) pending += 1;
    if (c.model.executionCount !== null) ran += 1;
    const outs = c.model.outputs;
    for (let i = 0; i < outs.length; i++) {
      const o = outs.get(i).toJSON();
      if (o.output_type === 'error') errors.push(o.ename + ': ' + o.evalue);
    }
  }
  return {status: kernel ? kernel.status : 'none', pending, ran, code, errors};
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


class Lab:
    """JupyterLab as `./course open` starts it, on a free port with a token, in its own settings dirs."""

    def __init__(self, tmp: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        settings = tmp / "settings"
        # the settings `./course open` writes (no news pop-up, no update check), as user settings here
        notif = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        notif.parent.mkdir(parents=True)
        notif.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        # every cell in the DOM (no windowing), so what is asserted on screen is the whole notebook
        tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True)
        tracker.write_text(json.dumps({"windowingMode": "none"}))
        # never save a run's outputs into the course's notebooks
        docs = settings / "@jupyterlab" / "docmanager-extension" / "plugin.jupyterlab-settings"
        docs.parent.mkdir(parents=True)
        docs.write_text(json.dumps({"autosave": False}))
        env = dict(os.environ, NATSLAB_BACKEND="local", NATSLAB_PROGRESS=str(tmp / "progress.json"),
                   JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
                   JUPYTER_RUNTIME_DIR=str(tmp / "runtime"))
        env.pop("NATSLAB_QUIET", None)
        cmd = [str(Path(sys.executable).with_name("jupyter")), "lab",
               "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={ROOT}",
               "--LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb",
               f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
               "--ServerApp.open_browser=False", "--LabApp.expose_app_in_browser=True"]
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.log = open(tmp / "jupyterlab.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api("GET", "/api/status")
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"JupyterLab did not start: see {tmp / 'jupyterlab.log'}")
                time.sleep(0.3)

    def api(self, method: str, path: str):
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            body = resp.read()
        return json.loads(body) if body else None

    def put_setting(self, plugin: str, raw: dict) -> None:
        req = urllib.request.Request(f"{self.base}/lab/api/settings/{plugin}", method="PUT",
                                     data=json.dumps({"raw": json.dumps(raw)}).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).close()

    def url(self, path: str) -> str:
        return f"{self.base}/lab/tree/{path}?token={self.token}&reset"

    def stop(self) -> set[int]:
        """Shut every kernel and the server down; returns the processes that were running under it."""
        tree = _descendants(self.proc.pid)
        try:
            for kernel in self.api("GET", "/api/kernels"):
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
        except OSError:
            pass
        tree |= _descendants(self.proc.pid)
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self.log.close()
        return tree


def run_notebook(page, lab: Lab, path: str, timeout: float = 180) -> dict:
    """Open ``path``, run all cells, wait until the kernel is idle with nothing queued; returns the state."""
    page.goto(lab.url(path))
    page.wait_for_function(
        "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return !!(w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
        " && w.sessionContext.session.kernel.status === 'idle' && w.content.widgets.length); }",
        timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
    deadline = time.monotonic() + timeout
    quiet = 0
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(STATE_JS)
        busy = state is None or state["status"] != "idle" or state["pending"] > 0 or state["ran"] == 0
        quiet = 0 if busy else quiet + 1
        if quiet >= 3:  # idle, nothing queued, three looks in a row
            return state
        time.sleep(0.5)
    shoot(page, "timeout-" + Path(path).stem, readme=False)
    raise AssertionError(f"{path} did not finish within {timeout:.0f} s: {state}")


def errors_on_page(page) -> list[str]:
    """Every error output, as the notebook model has it and as the page shows it (both must agree).

    stderr streams (warnings, a library's logged traceback) are not errors: they are printed, not failed.
    """
    state = page.evaluate(STATE_JS) or {"errors": []}
    shown = page.locator(ERROR_SELECTOR).evaluate_all(SHOWN_ERRORS_JS)
    others = [t for t in page.locator(ERROR_SELECTOR).evaluate_all(STDERR_JS) if t not in shown]
    for text in others:
        print(f"stderr output (not an error): {text!r}")
    if len(shown) != len(state["errors"]):
        return state["errors"] + [f"on screen: {t}" for t in shown] + ["model and page disagree"]
    return state["errors"]


def news_popup(page):
    """JupyterLab's "Would you like to get notified about official Jupyter news?" toast."""
    return page.locator(".Toastify__toast").filter(has_text="Jupyter news")


def shoot(page, name: str, readme: bool = True) -> None:
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=False)
    extra = os.environ.get("NATSLAB_SCREENSHOTS")
    if extra and readme:
        dest = (ROOT / extra) if not os.path.isabs(extra) else Path(extra)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(OUT / f"{name}.png", dest / f"{name}.png")


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    lab = Lab(tmp)
    tree: set[int] = set()
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                yield lab, page
            finally:
                browser.close()
    finally:
        tree = lab.stop()
        nats = {p for p in tree if _comm(p) == "nats-server"}
        deadline = time.monotonic() + 20
        while any(_alive(p) for p in tree) and time.monotonic() < deadline:
            time.sleep(0.3)
        left = sorted(f"{p} {_comm(p)}" for p in tree if _alive(p))
        assert not left, f"still running after JupyterLab stopped: {left} (nats-servers seen: {len(nats)})"


def test_welcome_lesson_runs_with_no_error_and_no_news_popup(browser_page):
    lab, page = browser_page
    state = run_notebook(page, lab, "notebooks/00_welcome.ipynb")
    shoot(page, "welcome-run", readme=False)
    assert state["ran"] == state["code"], f"not every code cell ran: {state}"
    assert errors_on_page(page) == []
    assert news_popup(page).count() == 0, "a news pop-up covers the lesson"
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    demo = page.locator(".jp-Cell").filter(has=page.locator(".jp-OutputArea-output").filter(has_text="version"))
    (demo.first if demo.count() else page.locator(".jp-Cell").first).scroll_into_view_if_needed()
    shoot(page, "lesson")


def test_widget_lesson_renders_its_widgets(browser_page):
    lab, page = browser_page
    state = run_notebook(page, lab, "notebooks/01_1_subjects.ipynb")
    assert state["ran"] == state["code"], f"not every code cell ran: {state}"
    assert errors_on_page(page) == []
    widgets = page.locator(WIDGET_SELECTOR)
    assert widgets.count() > 0, "no ipywidgets widget rendered"
    assert page.locator(".jp-OutputArea-output").filter(has_text="Error displaying widget").count() == 0
    # the matcher asks the server with a real subscription; a broken connection shows as "could not ask"
    assert page.locator(".jp-OutputArea-output").filter(has_text="could not ask").count() == 0, \
        "the subject matcher could not ask the server"
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    widgets.first.scroll_into_view_if_needed()
    shoot(page, "widget")


def test_lab_check_fails_with_the_red_card(browser_page):
    lab, page = browser_page
    state = run_notebook(page, lab, "labs/00_welcome_lab.ipynb")
    # the lab ships unsolved: its first check fails, which stops "run all" there
    card = page.locator(".jp-OutputArea-output div[style*='#cf222e']").filter(has_text="Exercise 0.1")
    card.first.wait_for(timeout=10_000)
    assert "✗" in card.first.inner_text()
    page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
    card.first.scroll_into_view_if_needed()
    shoot(page, "verdict")
    assert state["errors"], "the unsolved lab's check did not fail"


def test_detectors_catch_an_error_and_a_missing_widget(browser_page):
    """Shows the checks above can fail: a cell that raises is an error, a notebook without widgets has none."""
    lab, page = browser_page
    OUT.mkdir(exist_ok=True)
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("print('fine')"),
                nbformat.v4.new_code_cell("raise ValueError('cell raised on purpose')")]
    nbformat.write(nb, OUT / "raises.ipynb", version=4)
    run_notebook(page, lab, "tests/browser/output/raises.ipynb", timeout=60)
    errors = errors_on_page(page)
    assert any("cell raised on purpose" in e for e in errors), errors
    assert page.locator(ERROR_SELECTOR).count() >= 1
    assert page.locator(WIDGET_SELECTOR).count() == 0


def test_news_popup_detector_sees_the_popup_without_the_course_settings(browser_page):
    """Shows the no-pop-up assertion can fail: with JupyterLab's default (fetchNews "none") the toast is seen."""
    lab, page = browser_page
    plugin = "@jupyterlab/apputils-extension:notification"
    lab.put_setting(plugin, {"fetchNews": "none"})
    try:
        page.goto(lab.url("notebooks/00_welcome.ipynb"))
        news_popup(page).first.wait_for(timeout=30_000)
    finally:
        lab.put_setting(plugin, {"fetchNews": "false", "checkForUpdates": False})
