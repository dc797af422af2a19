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
from pathlib import Path

import pytest
from typer.testing import CliRunner

from costguard.cli import app

ROOT = Path(__file__).resolve().parents[2]
POLICIES = str(ROOT / "policies")
RECORDINGS = sorted(str(p) for p in (ROOT / "examples" / "recordings").glob("*.jsonl"))
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome") if shutil.which(name)), None)

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium on this machine (install the Debian package: apt-get install -y chromium; .ci/run does)",
)

_PROBE = """
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
      stickyFirst: getComputedStyle(panel.querySelector('td,th')).position})),
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


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("html")
    ledger = f"sqlite:///{folder}/l.db"
    runner = CliRunner()
    filled = runner.invoke(app, ["simulate", *RECORDINGS, "--policies", POLICIES, "--into", ledger, "--quiet"])
    assert filled.exit_code == 0, filled.output
    out = folder / "report.html"
    made = runner.invoke(app, ["report", "--ledger", ledger, "--policies", POLICIES, "--output", str(out)])
    assert made.exit_code == 0, made.output
    return out


@pytest.mark.parametrize("width", [800, 1400])
def test_report_fits_the_window_and_draws_every_chart(page: Path, width: int, tmp_path: Path) -> None:
    layout = _layout(page, width, tmp_path)
    # no horizontal overflow of the page, nor of any table (no column hidden behind a scroll)
    assert layout["viewport"] == width
    assert layout["pageWidth"] <= layout["viewport"], layout
    for table in layout["tables"]:
        assert table["scrollWidth"] <= table["clientWidth"], table
        assert table["stickyFirst"] == "sticky"
    # every chart is there, inside the window, drawn with bars or lines
    labels = [chart["label"] for chart in layout["charts"]]
    assert labels == ["spend per day per workflow", "budget burn for claims-intake", "budget burn for support-triage",
                      "histogram of cost per request"]
    for chart in layout["charts"]:
        assert chart["width"] > 0 and chart["height"] > 0 and chart["right"] <= width and chart["shapes"] > 0, chart
    # headings get smaller as they go down a level
    sizes = {tag: size for tag, size in layout["headings"]}
    assert sizes["H1"] > sizes["H2"] > sizes["H3"]


def test_axis_ticks_are_round_and_percentages_are_percentages(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    # the budget share is a percentage, never money
    assert re.search(r"<td>\d+\.\d%</td>", text) and "$0.0" not in re.findall(r"<td[^>]*>([^<]*)</td>", text)[-1:]
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]*)</text>', text)
    assert ticks
    for tick in ticks:
        value = tick.replace("$", "").replace(",", "")
        # a 1, 2 or 5 times a power of ten step: every tick is a whole multiple of its step
        assert re.fullmatch(r"\d+(\.\d+)?", value), tick
