"""The HTML report as a browser lays it out: headless Chromium (the Debian package) at 800 and 1400 px.

A small script appended to a copy of the page measures the layout after load and writes it into
the DOM, which ``--dump-dom`` prints: no WebDriver, no extra dependency. CI installs Chromium
(`.ci/run`); where none can be installed the test is skipped and says why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costguard.cli import app
from costguard.ledger.sqlite import SQLiteLedger
from costguard.usage import ActionRecord

ROOT = Path(__file__).resolve().parents[2]
POLICIES = str(ROOT / "policies")
RECORDINGS = sorted(str(p) for p in (ROOT / "examples" / "recordings").glob("*.jsonl"))
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine (install the Debian package: apt-get install -y chromium; .ci/run does)",
)

_PROBE = r"""
<script>
window.addEventListener('load', () => {
  const root = document.documentElement;
  const result = {
    viewport: root.clientWidth,
    pageWidth: root.scrollWidth,
    charts: [...document.querySelectorAll('svg')].map(svg => {
      const box = svg.getBoundingClientRect();
      return {label: svg.getAttribute('aria-label'), width: box.width, height: box.height,
              right: box.right, shapes: svg.querySelectorAll('rect,polyline').length};
    }),
    tables: [...document.querySelectorAll('.panel.scroll')].map(panel => ({
      scrollWidth: panel.scrollWidth, clientWidth: panel.clientWidth,
      stickyFirst: getComputedStyle(panel.querySelector('td,th')).position,
      // figures (every cell but the key) on one line each: a wrapped "$1.5|745" is a cut figure
      wrappedCells: [...panel.querySelectorAll('td:not(:first-child)')].filter(td => {
        const range = document.createRange();
        range.selectNodeContents(td);
        return range.getClientRects().length > 1;
      }).map(td => td.textContent),
      // the key may wrap between words (at spaces and hyphens), never inside one
      brokenKeys: [...panel.querySelectorAll('td:first-child')].filter(td => {
        const range = document.createRange();
        range.selectNodeContents(td);
        return range.getClientRects().length > td.textContent.trim().split(/[\s-]+/).length;
      }).map(td => td.textContent)})),
    headings: [...document.querySelectorAll('h1,h2,h3')].map(h => [h.tagName, parseFloat(getComputedStyle(h).fontSize)]),
    ticks: [...document.querySelectorAll('text.tick')].map(t => t.textContent),
  };
  const out = document.createElement('pre');
  out.id = 'probe';
  out.style.display = 'none';
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>
"""


def _layout(page: Path, width: int, tmp_path: Path) -> dict:
    probed = tmp_path / f"probe-{width}.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    profile = tmp_path / f"profile-{width}"
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", f"--window-size={width},1000", "--hide-scrollbars",
        "--virtual-time-budget=3000", "--dump-dom", probed.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r'<pre id="probe"[^>]*>(.*?)</pre>', done.stdout, re.S)
    assert found, f"chromium printed no probe (exit {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", '"'))


GROUP_BYS = ("workflow", "day", "model", "user", "agent", "action")


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("html")
    ledger = f"sqlite:///{folder}/l.db"
    runner = CliRunner()
    filled = runner.invoke(app, ["simulate", *RECORDINGS, "--policies", POLICIES, "--into", ledger, "--quiet"])
    assert filled.exit_code == 0, filled.output
    # action group responses, for the widest table (the action report)
    led = SQLiteLedger(folder / "l.db")
    for name, before, after, outcome in (
        ("claims GET /claims/search", 1_200_000, 4_000, "trimmed"),
        ("claims GET /claims/{claimId}/documents", 9_900_000, 300, "replaced"),
        ("claims.get_policy", 800, 800, "passed"),
    ):
        led.record_action(ActionRecord(1_795_305_600_000, "claims-intake", name, "s-1", None, before, after, 12, 340, 5, outcome))
    led.close()
    made = {}
    for group_by in GROUP_BYS:
        out = folder / f"report-{group_by}.html"
        done = runner.invoke(app, ["report", "--ledger", ledger, "--policies", POLICIES, "--group-by", group_by, "--output", str(out)])
        assert done.exit_code == 0, done.output
        made[group_by] = out
    return made


@pytest.mark.parametrize("group_by", GROUP_BYS)
@pytest.mark.parametrize("width", [800, 1400])
def test_report_fits_the_window_and_draws_every_chart(pages: dict[str, Path], group_by: str, width: int, tmp_path: Path) -> None:
    layout = _layout(pages[group_by], width, tmp_path)
    # no horizontal overflow of the page, nor of any table (no column hidden behind a scroll)
    assert layout["viewport"] == width
    assert layout["pageWidth"] <= layout["viewport"], layout
    for table in layout["tables"]:
        assert table["scrollWidth"] <= table["clientWidth"], table
        assert table["stickyFirst"] == "sticky"
        assert table["wrappedCells"] == [] and table["brokenKeys"] == [], table
    # every chart is there, inside the window, drawn with bars or lines
    labels = [chart["label"] for chart in layout["charts"]]
    assert labels == ["spend per day per workflow", "budget burn for claims-intake", "budget burn for support-triage",
                      "histogram of cost per request"]
    for chart in layout["charts"]:
        assert chart["width"] > 0 and chart["height"] > 0 and chart["right"] <= width and chart["shapes"] > 0, chart
    # headings get smaller as they go down a level
    sizes = {tag: size for tag, size in layout["headings"]}
    assert sizes["H1"] > sizes["H2"] > sizes["H3"]


def test_axis_ticks_are_round_and_percentages_are_percentages(pages: dict[str, Path]) -> None:
    text = pages["workflow"].read_text(encoding="utf-8")
    # the budget share is a percentage (this month's spend over the $9,000 monthly budget), never money
    assert re.search(r'<td data-label="budget used">\d+\.\d%</td></tr>', text)
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]*)</text>', text)
    assert ticks
    for axis in _axes(ticks):
        steps = {b - a for a, b in zip(axis, axis[1:], strict=False)}
        assert len(steps) == 1, axis  # evenly spaced from 0
        step = steps.pop()
        mantissa = step / Decimal(10) ** step.adjusted()
        assert mantissa in (1, 2, 5), axis


def _axes(ticks: list[str]) -> list[list[Decimal]]:
    """Tick labels split into axes (each axis starts again at 0)."""
    axes: list[list[Decimal]] = []
    for tick in ticks:
        value = Decimal(tick.replace("$", "").replace(",", ""))
        if value == 0:
            axes.append([])
        axes[-1].append(value)
    return axes
