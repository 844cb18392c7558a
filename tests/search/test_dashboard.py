"""``thaw dashboard`` end to end: a real SQLite study published by TrialPublisher, the real
optuna-dashboard server in a subprocess, its JSON API, and headless Chromium on its pages.

The server is started as ``python -m thaw.search._dashboard STUDY_FILE`` (what ``thaw dashboard``
runs). Browser checks need /usr/bin/chromium, /usr/bin/chromedriver
(``bash .ci/install-browser.sh``) and selenium; they are skipped with the reason otherwise.
Screenshots go to ``$THAW_SCREENSHOT_DIR`` when set, else to a temp folder.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest

from thaw.reports import write_report
from thaw.reports._notes import render_history_csv, render_trial_curves_svg
from thaw.search._dashboard import (
    DashboardError,
    PortInUseError,
    check_port,
    dashboard_url,
    main,
    make_dashboard_server,
)
from thaw.search._publish import (
    TrialPublisher,
    default_artifact_dir,
    open_artifact_store,
    publish_report_artifacts,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

REPO = Path(__file__).resolve().parents[2]
XSS = "<img src=x onerror=alert(1)>"
LINKS = "**bold** [x](http://evil.example) www.evil.example"
EPOCHS = 10
KINDS = ("healthy", "overfit", "climbing", "diverged", "healthy", "fail")
STARTUP_S = 20.0


# ----------------------------------------------------------------------------- the study


def _curves(kind: str) -> tuple[list[float], list[float]]:
    if kind == "overfit":
        val = [1.0 - 0.15 * e if e < 4 else 0.4 + 0.12 * (e - 4) for e in range(EPOCHS)]
        return val, [math.exp(-0.4 * e) for e in range(EPOCHS)]
    if kind == "climbing":
        val = [0.9 - 0.1 * e if e < 3 else 0.6 + 0.2 * (e - 3) for e in range(EPOCHS)]
        return val, [math.exp(-0.5 * e) for e in range(EPOCHS)]
    if kind == "diverged":
        return [0.9, 3.0, 40.0, math.nan], [0.8, 2.5, 30.0, math.nan]
    val = [1.2 * math.exp(-0.3 * e) + 0.3 for e in range(EPOCHS)]
    return val, [1.3 * math.exp(-0.35 * e) + 0.2 for e in range(EPOCHS)]


def objective(trial: optuna.Trial) -> float:
    """What thaw's objective stores, without Keras: intermediate values, history, summary."""
    trial.suggest_int("unfrozen_layers", 0, 10)
    trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    trial.suggest_float("dropout", 0.0, 0.5)
    trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
    kind = KINDS[trial.number % len(KINDS)]
    if trial.number == 0:
        trial.set_user_attr("strategy", XSS)
    if kind == "fail":
        trial.set_user_attr("fail_reason", f"ValueError: class {XSS} {LINKS}")
        raise ValueError("boom")
    val, train = _curves(kind)
    history: dict[str, list[float | None]] = {
        "loss": [],
        "val_loss": [],
        "accuracy": [],
        "val_accuracy": [],
    }
    for epoch, (v, t) in enumerate(zip(val, train, strict=True), start=1):
        history["loss"].append(t if math.isfinite(t) else None)
        history["val_loss"].append(v if math.isfinite(v) else None)
        history["accuracy"].append(0.5 + 0.04 * epoch)
        history["val_accuracy"].append(0.45 + 0.03 * epoch)
        trial.set_user_attr("history", history)
        trial.report(v, epoch)
        if (kind == "climbing" and epoch == 6) or (kind == "diverged" and not math.isfinite(v)):
            trial.set_user_attr("prune_reason", kind)
            trial.set_user_attr("prune_epoch", epoch)
            trial.set_user_attr("prune_detail", f"{kind} at epoch {epoch} {XSS}")
            raise optuna.TrialPruned()
    finite = [x for x in history["val_loss"] if x is not None]
    trial.set_user_attr("best_epoch", history["val_loss"].index(min(finite)) + 1)
    trial.set_user_attr("best_val_loss", min(finite))
    trial.set_user_attr("final_val_loss", finite[-1])
    trial.set_user_attr("epochs_run", EPOCHS)
    return min(finite)


@dataclass(frozen=True)
class Published:
    study_file: Path
    storage_url: str
    artifact_dir: Path
    study: optuna.Study
    report_files: dict[str, str]
    """Report file name -> artifact id."""
    report_dir: Path


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Published:
    folder = tmp_path_factory.mktemp("dashboard")
    study_file = folder / "demo.yaml"
    study_file.write_text(
        "name: demo\nstorage: sqlite:///thaw.db\nmodel: {source: demo}\ndata: {source: demo}\n",
        encoding="utf-8",
    )
    url = f"sqlite:///{folder / 'thaw.db'}"
    artifact_dir = default_artifact_dir(url, folder)
    assert artifact_dir == folder / "artifacts"
    study = optuna.create_study(
        study_name="demo", storage=url, sampler=optuna.samplers.RandomSampler(seed=1)
    )
    study.set_user_attr("thaw:objective_metric", "val_loss")
    study.set_user_attr("thaw:num_layers", 10)
    study.set_user_attr("thaw:data", {"class_names": ["cat", XSS, f"dog {LINKS}"]})
    store = open_artifact_store(artifact_dir)
    publisher = TrialPublisher(store, study_note_every_s=0)
    study.optimize(
        publisher.wrap(objective), n_trials=len(KINDS), callbacks=[publisher], catch=(ValueError,)
    )
    publisher.finish(study)
    files = write_report(study, folder / "report")
    odd = folder / "report" / f"{XSS}.txt"
    odd.write_text("a file name from elsewhere\n", encoding="utf-8")
    report_files = publish_report_artifacts(study, store, [*_report_paths(files), odd])
    return Published(study_file, url, artifact_dir, study, report_files, folder / "report")


def _report_paths(files: Any) -> list[Path]:
    return [files.markdown, files.html, files.csv, files.summary_json]


# -------------------------------------------------------------------------------- server


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Server:
    """``python -m thaw.search._dashboard STUDY_FILE --port 0`` with its printed URL."""

    def __init__(self, study_file: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "thaw.search._dashboard", str(study_file), "--port", "0", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Ctrl-C as at a terminal, however pytest was started: a shell without job control
            # starts background commands with SIGINT ignored, and children inherit that.
            preexec_fn=_default_sigint,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.page = self._wait_for_url()
        match = re.fullmatch(r"(http://127\.0\.0\.1:(\d+))/dashboard/studies/(\d+)", self.page)
        assert match, self.page
        self.base, self.port, self.study_id = match[1], int(match[2]), int(match[3])

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.stdout.append(line)
            found = re.search(r"http://\S+", line)
            if found:
                return found[0]
        self.process.kill()
        _, err = self.process.communicate(timeout=5)
        raise AssertionError(f"no URL printed; stdout {self.stdout!r}; stderr {err!r}")

    def get(self, path: str) -> tuple[bytes, str]:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return response.read(), response.headers.get("Content-Type", "")

    def json(self, path: str) -> Any:
        return json.loads(self.get(path)[0])

    def interrupt(self, timeout: float = 30.0) -> tuple[int, str, str]:
        """Ctrl-C; returns exit status, all stdout and stderr."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"still running {timeout} s after SIGINT") from None
        self.reader.join(timeout=5)
        assert self.process.stderr is not None
        err = self.process.stderr.read()
        while not self.lines.empty():
            self.stdout.append(self.lines.get())
        return int(self.process.returncode), "".join(self.stdout), err

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture(scope="module")
def server(published: Published) -> Iterator[Server]:
    running = Server(published.study_file)
    try:
        yield running
    finally:
        running.close()


@pytest.fixture(scope="module")
def detail(server: Server) -> dict[str, Any]:
    return dict(server.json(f"/api/studies/{server.study_id}"))


# --------------------------------------------------------------------------- JSON API


def test_printed_url_is_the_study_page(server: Server, published: Published) -> None:
    assert server.study_id == published.study._study_id
    studies = server.json("/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["demo"]
    meta = server.json("/api/meta")
    assert meta["artifact_is_available"] is True
    assert meta["allow_unsafe"] is False


def test_trials_carry_intermediate_values_user_attrs_notes_and_artifacts(
    detail: dict[str, Any],
) -> None:
    trials = {t["number"]: t for t in detail["trials"]}
    assert [trials[n]["state"] for n in range(len(KINDS))] == [
        "Complete",
        "Complete",
        "Pruned",
        "Pruned",
        "Complete",
        "Fail",
    ]
    for number in range(5):
        trial = trials[number]
        steps = [v["step"] for v in trial["intermediate_values"]]
        assert steps == list(range(1, len(steps) + 1)) and steps, number
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert "history" in attrs and "verdicts" in attrs
        verdicts = json.loads(attrs["verdicts"])
        assert verdicts and {"verdict", "confidence", "evidence", "recommendation"} <= set(
            verdicts[0]
        )
        note = trial["note"]["body"]
        assert note.startswith(f"### Trial {number}: ") and "#### Verdicts" in note
        names = sorted(a["filename"] for a in trial["artifacts"])
        assert names == [f"trial-{number}-history.csv", f"trial-{number}-learning-curves.svg"]
    attrs2 = {a["key"]: a["value"] for a in trials[2]["user_attrs"]}
    assert attrs2["prune_reason"] == "climbing"
    # The dashboard names the objective and lists the verdict as a trial-table column.
    assert detail["objective_names"] == ["val_loss"]
    assert "verdict" in {a["key"] for a in detail["union_user_attrs"]}
    for number in range(5):
        attrs = {a["key"]: a["value"] for a in trials[number]["user_attrs"]}
        names = [v["verdict"] for v in json.loads(attrs["verdicts"])]
        assert attrs["verdict"] == ", ".join(dict.fromkeys(names)), number
    # A pruned trial's note states the best value it reached (what the report ranks by).
    assert "The best val loss it reached:" in trials[2]["note"]["body"]
    assert {a["key"]: a["value"] for a in trials[0]["user_attrs"]}["best_epoch"] == "10"
    assert "**Overfitting**" in trials[1]["note"]["body"]
    assert "**Learning rate too high**" in trials[3]["note"]["body"]
    assert trials[5]["artifacts"] == [] and "**Why it failed:**" in trials[5]["note"]["body"]
    assert "\\<img src=x onerror=alert(1)\\>" in trials[0]["note"]["body"]


def test_study_note_and_report_artifacts(detail: dict[str, Any], published: Published) -> None:
    note = detail["note"]["body"]
    assert note.startswith("### thaw study demo")
    assert "#### Diagnosis" in note and "- **Verdicts:**" in note
    assert "#### Ranking (top 5 of 5 ranked trials)" in note
    # Link-free: the only link-like text is a class name, inside a code span.
    assert "`[x](http://evil.example)`" in note
    outside_code = re.sub(r"(`+).*?\1", "", note)
    assert re.search(r"(?<!\\)\]\(|://|www\.|@", outside_code) is None
    names = sorted(a["filename"] for a in detail["artifacts"])
    assert names == sorted(["report.md", "report.html", "trials.csv", "summary.json", f"{XSS}.txt"])


def test_artifacts_download_byte_identical(
    server: Server, detail: dict[str, Any], published: Published
) -> None:
    frozen = {t.number: t for t in published.study.get_trials()}
    trial = next(t for t in detail["trials"] if t["number"] == 0)
    for artifact in trial["artifacts"]:
        body, content_type = server.get(
            f"/artifacts/{server.study_id}/{trial['trial_id']}/{artifact['artifact_id']}"
        )
        on_disk = (published.artifact_dir / artifact["artifact_id"]).read_bytes()
        assert body == on_disk
        if artifact["filename"].endswith(".svg"):
            assert content_type == "image/svg+xml"
            assert body == render_trial_curves_svg(frozen[0]).encode()
        else:
            assert body == render_history_csv(frozen[0]).encode()
    report_id = published.report_files["report.md"]
    body, _ = server.get(f"/artifacts/{server.study_id}/{report_id}")
    assert body == (published.report_dir / "report.md").read_bytes()


# ------------------------------------------------------------------------ bad input


def test_port_in_use_names_another_free_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(PortInUseError) as caught:
            check_port("127.0.0.1", port)
    free = caught.value.free_port
    assert free is not None and free != port
    assert str(caught.value) == (
        f"port {port} on 127.0.0.1 is already in use (another dashboard?); try --port {free}"
    )
    check_port("127.0.0.1", free)  # really free


def test_cli_port_in_use_is_one_line(
    published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert main([str(published.study_file), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert re.fullmatch(rf"thaw: error: port {port} on 127\.0\.0\.1 .*try --port \d+\n", err)


@pytest.mark.parametrize("kind", ["missing", "garbage", "folder"])
def test_storage_that_cannot_be_opened_is_one_line(
    kind: str, tmp_path: Path, published: Published, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / ("nowhere/x.db" if kind == "folder" else "x.db")
    if kind == "garbage":
        db.write_bytes(b"this is not a database" * 100)
    argv = [str(published.study_file), "--storage", f"sqlite:///{db}", "--port", "0"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("thaw: error: "), err
    assert "storage" in err
    assert not db.exists() or kind == "garbage"  # the dashboard never creates a database
    with pytest.raises(DashboardError):
        make_dashboard_server(f"sqlite:///{db}", None)


def test_dashboard_url() -> None:
    assert dashboard_url("127.0.0.1", 8080, 3) == "http://127.0.0.1:8080/dashboard/studies/3"
    assert dashboard_url("0.0.0.0", 80) == "http://127.0.0.1:80/dashboard"
    assert dashboard_url("::1", 8080, 1) == "http://[::1]:8080/dashboard/studies/1"


def test_ctrl_c_stops_the_server_cleanly(published: Published) -> None:
    running = Server(published.study_file)
    try:
        assert running.json("/api/meta")["artifact_is_available"] is True
        # A hang fails (no exit within 30 s); how fast it stops is not timed here: the machines
        # are shared and a busy one may take seconds to schedule the process.
        status, out, err = running.interrupt(timeout=30)
    finally:
        running.close()
    assert status == 0, (out, err)
    assert "Press Ctrl-C to stop." in out and out.rstrip().endswith("Dashboard stopped.")
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    check_port("127.0.0.1", running.port)  # the port was released


# ---------------------------------------------------------------------------- browser

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
WIDTH, HEIGHT = 1400, 1000
WAIT_S = 15.0


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("THAW_SCREENSHOT_DIR")
    path = Path(configured) if configured else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.exists() or not CHROMEDRIVER.exists():
        pytest.skip(
            f"browser checks need {CHROMIUM} and {CHROMEDRIVER} (run: bash .ci/install-browser.sh)"
        )
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    browser = webdriver.Chrome(options=options, service=service)
    try:
        yield browser
    finally:
        browser.quit()


def _wait(driver: Any, script: str, what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _open(driver: Any, url: str, text: str) -> None:
    driver.get_log("browser")
    driver.get(url)
    _wait(
        driver,
        f"return document.body && document.body.innerText.includes({json.dumps(text)})",
        f"{text!r} on {url}",
    )


def _check_safe_and_quiet(driver: Any) -> None:
    """Nothing injected by the untrusted strings, and no SEVERE console message."""
    injected = driver.execute_script(
        """return {
            img_x: Array.from(document.images).filter(i => i.getAttribute('src') === 'x').length,
            handlers: document.querySelectorAll('[onerror], script:not([src])').length,
            evil_links: Array.from(document.links).filter(a => a.href.includes('evil')).length,
        }"""
    )
    assert injected == {"img_x": 0, "handlers": 0, "evil_links": 0}, injected
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - raises when no alert is open
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe


@pytest.mark.browser
def test_trial_page_shows_note_and_chart(
    driver: Any, server: Server, detail: dict[str, Any], screenshot_dir: Path
) -> None:
    driver.set_window_size(WIDTH, HEIGHT)
    _open(driver, f"{server.page}/trials?numbers=0", "Trial 0: complete")
    body = driver.execute_script("return document.body.innerText")
    assert f"Textbook strategy: {XSS}" in body  # shown as text
    assert "Healthy (confidence" in body and "Recommendation" in body
    trial_id = next(t["trial_id"] for t in detail["trials"] if t["number"] == 0)
    prefix = f"{server.base}/artifacts/{server.study_id}/{trial_id}/"
    size = _wait(
        driver,
        f"""const img = Array.from(document.images).find(i => i.src.startsWith('{prefix}'));
        return img && img.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.naturalHeight]
            : null;""",
        "the learning-curve artifact image",
    )
    assert size[0] >= 500 and size[1] >= 300, size
    _check_safe_and_quiet(driver)
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(screenshot_dir / "dashboard-trial-note.png"))
    driver.execute_script(
        f"Array.from(document.images).find(i => i.src.startsWith('{prefix}'))"
        ".scrollIntoView({block: 'center'})"
    )
    assert driver.save_screenshot(str(screenshot_dir / "dashboard-trial-artifacts.png"))
    svg_url = driver.execute_script(
        f"return Array.from(document.images).find(i => i.src.startsWith('{prefix}')).src"
    )
    driver.get(svg_url)  # the chart file itself, as a reviewer opening it sees it
    assert driver.execute_script("return document.documentElement.tagName") == "svg"
    assert driver.save_screenshot(str(screenshot_dir / "dashboard-trial-chart.png"))
    severe = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    assert severe == [], severe


@pytest.mark.browser
def test_failed_trial_note_shows_untrusted_text_as_text(
    driver: Any, server: Server, screenshot_dir: Path
) -> None:
    driver.set_window_size(WIDTH, HEIGHT)
    _open(driver, f"{server.page}/trials?numbers=5", "Why it failed")
    body = driver.execute_script("return document.body.innerText")
    assert f"Why it failed: ValueError: class {XSS} {LINKS}" in body
    _check_safe_and_quiet(driver)
    assert driver.save_screenshot(str(screenshot_dir / "dashboard-failed-trial.png"))


@pytest.mark.browser
def test_note_page_shows_study_note(driver: Any, server: Server, screenshot_dir: Path) -> None:
    driver.set_window_size(WIDTH, HEIGHT)
    _open(driver, f"{server.page}/note", "thaw study demo")
    body = driver.execute_script("return document.body.innerText")
    assert "Diagnosis" in body and "Ranking (top 5 of 5 ranked trials)" in body
    assert f"Classes (3): cat, {XSS}, dog {LINKS}." in body
    rows = driver.execute_script("return document.querySelectorAll('table tr').length")
    assert rows == 1 + 5
    _check_safe_and_quiet(driver)
    assert driver.save_screenshot(str(screenshot_dir / "dashboard-study-note.png"))
    # The note card scrolls by itself: bring the ranking into view for a second picture.
    driver.execute_script("document.querySelector('table').scrollIntoView({block: 'end'})")
    assert driver.save_screenshot(str(screenshot_dir / "dashboard-study-ranking.png"))
