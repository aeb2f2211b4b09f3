"""The instructor console drives a real topology from typed commands."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_console_kills_restarts_and_explains():
    script = "status\nkill c1-n2\nstatus\nrestart c1-n2\nurls\nconfig c1-n1\ncut c1-n1\nnope\nquit\n"
    out = subprocess.run([sys.executable, "-m", "natslab", "up", "cluster", "--backend", "local"],
                         input=script, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "c1-n2        DOWN" in text and "kill c1-n2: done" in text and "restart c1-n2: done" in text
    assert "routes->c1-n2,c1-n3" in text and "META LEADER" in text
    assert 'server_name: "c1-n1"' in text
    assert "Cannot cut c1-n1's network on the local backend" in text
    assert "unknown command 'nope'" in text
    assert text.count("nats://127.0.0.1:") >= 9
