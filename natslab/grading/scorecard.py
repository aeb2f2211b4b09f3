"""The capstone's scorecard: one card, a line per requirement (passed or failed, what was seen, a hint).

``Scorecard(lines).show()`` displays it in a notebook; its text is what the final check's verdict lists.
The colours and layout follow ``checks._card``.
"""
from __future__ import annotations

import html


class Scorecard:
    def __init__(self, lines):
        self.lines = list(lines)

    @property
    def passed(self) -> bool:
        return bool(self.lines) and all(l.passed for l in self.lines)

    def text(self) -> str:
        done = sum(l.passed for l in self.lines)
        head = f"Capstone scorecard: {done} of {len(self.lines)} requirements passed"
        return "\n".join([head] + [l.text() for l in self.lines])

    def __repr__(self) -> str:
        return self.text()

    def _repr_html_(self) -> str:
        ok = self.passed
        color, bg = ("#1a7f37", "#dafbe1") if ok else ("#cf222e", "#ffebe9")
        rows = []
        for l in self.lines:
            mark, c = ("✓", "#1a7f37") if l.passed else ("✗", "#cf222e")
            hint = "" if l.passed or not l.hint else html.escape(l.hint)
            rows.append(f"<tr><td style='color:{c};font-weight:bold;vertical-align:top'>{mark}</td>"
                        f"<td style='vertical-align:top;white-space:nowrap'><b>{html.escape(l.name)}</b></td>"
                        f"<td style='vertical-align:top'>{html.escape(l.seen)}</td>"
                        f"<td style='vertical-align:top;font-style:italic'>{hint}</td></tr>")
        done = sum(l.passed for l in self.lines)
        return (f"<div style='border-left:6px solid {color};background:{bg};padding:6px 10px;"
                f"font-family:var(--jp-code-font-family,monospace)'><b style='color:{color}'>Capstone scorecard: "
                f"{done} of {len(self.lines)} requirements passed</b><table style='margin-top:4px'>"
                f"<tr><th></th><th>requirement</th><th>seen</th><th>hint</th></tr>{''.join(rows)}</table></div>")

    def show(self) -> None:
        try:
            from IPython import get_ipython
            from IPython.display import HTML, display
            if get_ipython() is not None:
                display(HTML(self._repr_html_()))
        except ImportError:
            pass
