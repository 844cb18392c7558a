"""Open report.html and compare.html in headless Chromium and check what a reader gets.

Needs /usr/bin/chromium and /usr/bin/chromedriver (``bash .ci/install-browser.sh``) and
selenium (dev extra); skipped with the reason otherwise. Screenshots go to
``$THAW_SCREENSHOT_DIR`` when set, else to the test's tmp_path.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from thaw.reports import write_comparison, write_report

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
WIDTH, HEIGHT = 1280, 900
CHROMIUM_PAGES = ("chrome://", "chrome-untrusted://", "chrome-search://")
"""Chromium's own pages (the new-tab page of a fresh profile loads resources at start)."""

if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
    pytest.skip(
        f"browser test needs {CHROMIUM} and {CHROMEDRIVER} (run: bash .ci/install-browser.sh)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip(
    "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
)
from selenium.webdriver.common.by import By  # noqa: E402


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("THAW_SCREENSHOT_DIR")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        yield browser
    finally:
        browser.quit()


def _open(driver: Any, page: Path) -> str:
    """Load ``page`` with empty logs; returns its file:// URL."""
    driver.get_log("browser")
    driver.get_log("performance")
    driver.set_window_size(WIDTH, HEIGHT)
    url = page.resolve().as_uri()
    driver.get(url)
    assert driver.execute_script("return document.readyState") == "complete"
    return url


def _check_console_and_network(driver: Any, url: str) -> None:
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe
    # Requests of this page (its own document, anything it would load, navigations away
    # from it). Chromium's own pages (the new-tab page of a fresh profile) are not ours.
    requested = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.requestWillBeSent":
            continue
        params = message["params"]
        document = params.get("documentURL", "")
        if document == url or params["request"]["url"] == url:
            requested.append(params["request"]["url"])
        else:
            assert document.startswith(CHROMIUM_PAGES), (document, params["request"]["url"])
    assert url in requested, "the performance log did not record the page (logging broken?)"
    assert set(requested) == {url}, requested


def _screenshots(driver: Any, directory: Path, name: str) -> None:
    """``<name>-top.png``: the first screen a reader sees; ``<name>-full.png``: all of it."""
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(directory / f"{name}-top.png"))
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, min(int(height) + 120, 16000))
    assert driver.save_screenshot(str(directory / f"{name}-full.png"))
    driver.set_window_size(WIDTH, HEIGHT)


def _check_charts(driver: Any, html: str) -> None:
    charts = driver.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == html.count("<svg") > 0
    for chart in charts:
        size = chart.size
        assert size["width"] > 100 and size["height"] > 100, size
        assert chart.find_element(By.TAG_NAME, "title").get_attribute("textContent")


def test_report_in_chromium(
    driver: Any, thaw_study: optuna.Study, tmp_path: Path, screenshot_dir: Path
) -> None:
    files = write_report(thaw_study, tmp_path / "report", "postgresql://thaw:***@db/thaw")
    url = _open(driver, files.html)
    assert driver.title == "thaw report: flowers-finetune"

    best = driver.find_element(By.ID, "best-configuration")
    assert best.is_displayed()
    assert best.text.startswith("Use trial 3: unfrozen_layers 20 of 154, learning_rate 0.0003")
    assert best.location["y"] < HEIGHT  # the answer is on the first screen
    summary = driver.find_element(By.ID, "diagnosis-summary")
    assert summary.text.startswith("Diagnosis: 2 of 10 trials climbed")
    rows = driver.find_elements(By.CSS_SELECTOR, "#ranking-table tbody tr")
    numbers = [r.find_elements(By.TAG_NAME, "td")[1].text.split(",")[0].split()[0] for r in rows]
    assert [int(n) for n in numbers] == [
        3,
        8,
        10,
        1,
        2,
        4,
        0,
        9,
        5,
        6,
        7,
    ]
    assert "rank-1" in (rows[0].get_attribute("class") or "")
    _check_charts(driver, files.html.read_text(encoding="utf-8"))
    for element_id in ("importance-table", "domain-shift", "determinism", "manifest-table"):
        assert driver.find_element(By.ID, element_id).is_displayed(), element_id
    sections = [
        s.get_attribute("class") for s in driver.find_elements(By.CSS_SELECTOR, "body > section")
    ]
    assert sections == [
        "answer",
        "why",
        "ranking",
        "curves",
        "params",
        "pruning",
        "anytime",
        "manifest",
    ]
    _check_console_and_network(driver, url)
    _screenshots(driver, screenshot_dir, "report")


LAYOUT_WIDTHS = (1280, 390)
"""A laptop and a phone (CSS px)."""
ANSWER_TOP_MAX = 900
MIN_CHART_TEXT_PX = 10.0

_LAYOUT_JS = """
const table = document.getElementById('ranking-table');
const answer = document.getElementById('answer');
let minText = 1e9;
for (const svg of document.querySelectorAll('svg.chart')) {
  const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
  for (const t of svg.querySelectorAll('text')) {
    minText = Math.min(minText, parseFloat(getComputedStyle(t).fontSize) * scale);
  }
}
return {
  viewport: document.documentElement.clientWidth,
  page: document.documentElement.scrollWidth,
  table: table.scrollWidth,
  tableWrap: table.parentElement.scrollWidth,
  answerTop: answer.getBoundingClientRect().top + window.scrollY,
  chartTop: document.getElementById('answer-chart').getBoundingClientRect().top + window.scrollY,
  minChartText: minText,
  detailsOpen: document.querySelectorAll('#ranking-table details[open]').length,
};
"""


def _layout(driver: Any) -> dict[str, float]:
    figures: dict[str, float] = driver.execute_script(_LAYOUT_JS)
    return figures


@pytest.mark.parametrize("width", LAYOUT_WIDTHS)
def test_report_layout(
    driver: Any, thaw_study: optuna.Study, tmp_path: Path, screenshot_dir: Path, width: int
) -> None:
    """At a laptop and a phone width the ranking fits without horizontal scrolling (folded
    and unfolded), the answer starts on the first screen, chart text stays legible, and
    the page logs no errors and makes no requests."""
    files = write_report(thaw_study, tmp_path / "report", "sqlite:///x.db")
    url = files.html.resolve().as_uri()
    driver.get_log("browser")
    driver.get_log("performance")
    # Emulate the device width (a desktop window cannot be made as narrow as a phone).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": width < 600},
    )
    try:
        driver.get(url)
        closed = _layout(driver)
        driver.execute_script(
            "document.querySelectorAll('#ranking-table details').forEach(d => d.open = true)"
        )
        opened = _layout(driver)
        print(f"layout at {width}px: folded {closed}, unfolded {opened}")
        assert closed["viewport"] <= width  # less a scroll bar, if any
        for figures in (closed, opened):
            assert figures["table"] <= figures["viewport"], figures
            assert figures["tableWrap"] <= figures["viewport"], figures
            assert figures["page"] <= figures["viewport"], figures
        assert opened["detailsOpen"] == len(thaw_study.get_trials()) - 1  # RUNNING not ranked
        assert closed["answerTop"] <= ANSWER_TOP_MAX, closed
        assert closed["minChartText"] >= MIN_CHART_TEXT_PX, closed
        _check_console_and_network(driver, url)
        driver.execute_script("window.scrollTo(0, 0)")
        assert driver.save_screenshot(str(screenshot_dir / f"layout-{width}-top.png"))
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def test_comparison_in_chromium(
    driver: Any, thaw_study: optuna.Study, tmp_path: Path, screenshot_dir: Path
) -> None:
    other = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'other.db'}", study_name="flowers-random"
    )
    for key, value in thaw_study.user_attrs.items():
        other.set_user_attr(key, value)
    config = {**thaw_study.user_attrs["thaw:config"], "seed": 7, "sampler": {"name": "random"}}
    other.set_user_attr("thaw:config", config)
    other.add_trials(thaw_study.get_trials()[:6])
    files = write_comparison([thaw_study, other], tmp_path / "compare")
    url = _open(driver, files.html)
    assert driver.title == "thaw comparison: flowers-finetune vs flowers-random"

    best = driver.find_element(By.ID, "comparison-best")
    assert best.text.startswith("Best: flowers-finetune, trial 3")
    assert best.location["y"] < HEIGHT
    differences = driver.find_element(By.ID, "differences-summary").text
    assert differences == (
        "The studies differ in: seed, sampler (n_startup_trials, name), search space (batchnorm)."
    )
    chart = driver.find_element(By.CSS_SELECTOR, "#efficiency-chart svg.chart")
    assert len(chart.find_elements(By.TAG_NAME, "polyline")) == 2
    best_rows = driver.find_elements(By.CSS_SELECTOR, "#best-table tbody tr")
    assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in best_rows] == [
        "flowers-finetune",
        "flowers-random",
    ]
    for element_id in ("verdict-table", "pruning-table", "param-table", "differences-table"):
        assert driver.find_element(By.ID, element_id).is_displayed(), element_id
    _check_charts(driver, files.html.read_text(encoding="utf-8"))
    _check_console_and_network(driver, url)
    _screenshots(driver, screenshot_dir, "compare")


def test_checks_catch_requests_and_console_errors(driver: Any, tmp_path: Path) -> None:
    """The two checks above are not vacuous: a page that fetches and logs errors fails."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script>'
        "</body></html>",
        encoding="utf-8",
    )
    url = _open(driver, page)
    with pytest.raises(AssertionError):
        _check_console_and_network(driver, url)
    _open(driver, page)
    with pytest.raises(AssertionError, match="127.0.0.1"):
        # Console clean-up aside, the request alone must fail the check.
        driver.get_log("browser")
        _check_console_and_network(driver, url)


def test_the_range_test_chart_and_the_path_render_in_chromium(
    driver: Any, make_study: Any, add_trial: Any, thaw_params: Any, tmp_path: Path
) -> None:
    from optuna.trial import TrialState

    from thaw._keys import PROPOSED_BY, RANGE_TEST

    study = make_study(study_name="range-and-path")
    rates = [1e-6 * (10 ** (6 * i / 19)) for i in range(20)]
    losses = [2.0 - 0.05 * i for i in range(15)] + [1.4, 1.6, 2.5, 5.0, None]
    study.set_user_attr(
        RANGE_TEST,
        {
            "modes": {
                mode: {"learning_rates": rates, "losses": losses, "suggestion": s, "reason": "r"}
                for mode, s in (("frozen", 2.5e-4), ("adapt", None))
            },
            "epochs": 3.0,
            "window": [1e-5, 7.5e-3],
        },
    )
    first = thaw_params(2, 1e-3)
    add_trial(study, state=TrialState.COMPLETE, params=first, val_loss=[0.9, 0.6, 0.5])
    add_trial(
        study,
        state=TrialState.COMPLETE,
        params={**first, "learning_rate": 3e-3},
        val_loss=[0.8, 0.4, 0.3],
        user_attrs={
            PROPOSED_BY: {
                "trial": 0,
                "cause": "underfitting",
                "move": "lr*3",
                "words": "raise the learning rate 3x, to 0.003",
                "best_before": 0.5,
            }
        },
    )
    files = write_report(study, tmp_path / "report")
    _open(driver, files.html)
    html = files.html.read_text(encoding="utf-8")
    _check_charts(driver, html)
    chart = next(
        c
        for c in driver.find_elements(By.CSS_SELECTOR, "svg.chart")
        if "range test" in c.find_element(By.TAG_NAME, "title").get_attribute("textContent")
    )
    assert chart.is_displayed()
    path = driver.find_element(By.ID, "search-path")
    assert path.text.startswith("How the search got there: trial 0")
