"""The tree page and the report in a real browser: headless Chromium driven by Selenium.

Uses Debian's `chromium` and `chromium-driver` (or any Chromium/Chrome and matching chromedriver
on PATH; COACHLAB_CHROMIUM / COACHLAB_CHROMEDRIVER name others). Skips when no browser is
installed, unless COACHLAB_REQUIRE_BROWSER=1 (CI), where a missing browser fails. Screenshots are
kept in tests/artifacts/ (git-ignored) for people and CI to look at.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from coachlab.library import LibraryStore
from coachlab.schema import AuditStatus
from coachlab.viz import load_run, page_data, write_page, write_report
from coachlab.viz.run import DRY_RUN
from viz_run import HELPFUL, INJECTION, MUTATION_INJECTION, big_run, scripted_run

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def _find(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env]
    for name in names:
        found = shutil.which(name) or (name if Path(name).is_file() else None)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium session (skipped when there is none, unless COACHLAB_REQUIRE_BROWSER=1)."""
    binary = _find("COACHLAB_CHROMIUM", "chromium", "chromium-browser", "google-chrome")
    driver_path = _find("COACHLAB_CHROMEDRIVER", "chromedriver", "/usr/lib/chromium/chromedriver")
    if binary is None or driver_path is None or importlib.util.find_spec("selenium") is None:
        why = "no headless browser: apt-get install chromium chromium-driver, and pip install selenium"
        if os.environ.get("COACHLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(f"COACHLAB_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1500,950"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never tries to download one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def _open(driver: Any, page: Path) -> float:
    """Load a page and wait until its script has drawn it; returns the seconds that took."""
    start = time.perf_counter()
    driver.get(page.resolve().as_uri())
    while driver.execute_script("return document.body.getAttribute('data-ready')") != "true":
        assert time.perf_counter() - start < 30, "the page never finished drawing"
        time.sleep(0.05)
    return time.perf_counter() - start


def _errors(driver: Any) -> list[str]:
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def _shot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")  # the artefact's path, for whoever reads the test log (pytest -s or -rP)
    return path


def test_tree_page_shows_the_run_and_a_node_s_strategies(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    run_dir = scripted_run(tmp_path / "run")
    run = load_run(run_dir)
    page = write_page(run, tmp_path / "tree.html")
    _open(browser, page)
    banner = browser.find_element(By.ID, "dry-run")  # every model of this run is a script: said first, in red
    assert banner.is_displayed() and banner.text == DRY_RUN
    assert banner.location["y"] < browser.find_element(By.ID, "tree").location["y"]
    nodes = browser.find_elements(By.CSS_SELECTOR, "#nodes g.node")
    assert len(nodes) == len(run.tree) == 8
    assert browser.execute_script("return window.__pwned") is None  # no text from the run ran as script
    assert browser.find_elements(By.CSS_SELECTOR, "img") == []

    browser.find_element(By.CSS_SELECTOR, 'g.node[data-id="retail-late-delivery"]').click()
    details = browser.find_element(By.ID, "details")
    approved = LibraryStore(run_dir / "library").load().with_status(AuditStatus.APPROVED)
    root_strategy = next(s for s in approved if s.provenance and s.provenance.node_id == "retail-late-delivery")
    card = details.find_element(By.CSS_SELECTOR, f'.strategy[data-strategy="{root_strategy.id}"]')
    assert card.find_element(By.CSS_SELECTOR, ".guidance").text == HELPFUL["guidance"] == root_strategy.guidance
    assert card.find_element(By.CSS_SELECTOR, ".pill").text == "approved"
    assert "coachlab library approve" in card.find_element(By.CSS_SELECTOR, "code.command.approve").text
    opened = details.find_element(By.CSS_SELECTOR, "details.episode[open]")
    failure = opened.find_element(By.CSS_SELECTOR, ".line.failure")
    assert "failure turn" in failure.text and failure.text.startswith("Agent [")
    assert any(INJECTION in line.text for line in opened.find_elements(By.CSS_SELECTOR, ".line.customer"))
    _shot(browser, "tree-page.png")

    # Filters: status and search dim what does not match.
    match_count = browser.find_element(By.ID, "match-count")
    assert match_count.text == "8 of 8 nodes match"
    failed = sum(1 for n in run.tree.nodes() if n.status.value == "failed")
    browser.find_element(By.CSS_SELECTOR, 'input[data-status="failed"]').click()
    assert match_count.text == f"{8 - failed} of 8 nodes match"
    browser.find_element(By.CSS_SELECTOR, 'input[data-status="failed"]').click()
    browser.find_element(By.ID, "search").send_keys("manager")
    with_manager = sum(1 for n in run.tree.nodes() if n.mutation and "manager" in n.mutation)
    assert match_count.text == f"{with_manager} of 8 nodes match"
    assert len(browser.find_elements(By.CSS_SELECTOR, "#nodes g.node:not(.dim)")) == with_manager
    labels = [e.get_attribute("textContent") for e in browser.find_elements(By.CSS_SELECTOR, "#edges text title")]
    assert MUTATION_INJECTION in labels  # shown as text in the edge's tooltip

    browser.find_element(By.ID, "tab-library").click()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#library .strategy")) == len(run.library.strategies)
    assert _errors(browser) == []


def _rgba(hex_color: str) -> str:
    """#rrggbb as Selenium reads a computed colour back."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, 1)"


def test_tree_page_colours_by_task_success_and_switches_to_items_met_and_satisfaction(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    run = load_run(scripted_run(tmp_path / "run"))
    data = page_data(run)
    view = data["view"]
    _open(browser, write_page(run, tmp_path / "tree.html"))
    legend = browser.find_element(By.ID, "legend")

    def colours() -> tuple[dict[str, str], dict[str, str]]:
        fills, rings = {}, {}
        for g in browser.find_elements(By.CSS_SELECTOR, "#nodes g.node"):
            node = g.get_attribute("data-id")
            fills[node] = g.find_element(By.CSS_SELECTOR, "circle.dot").get_attribute("fill")
            rings[node] = g.find_element(By.CSS_SELECTOR, "circle.ring").get_attribute("stroke")
        return fills, rings

    def chips() -> list[tuple[str, str]]:
        """(episode id, chip colour) of the transcripts in the node panel."""
        return [
            (
                box.get_attribute("data-episode"),
                box.find_element(By.CSS_SELECTOR, "summary .chip").value_of_css_property("background-color"),
            )
            for box in browser.find_elements(By.CSS_SELECTOR, "#details details.episode")
        ]

    # Opened in task success: every node's fill and ring, the legend and the switch say so.
    assert browser.find_element(By.CSS_SELECTOR, 'input[data-measure="task_success"]').is_selected()
    assert browser.execute_script("return document.body.getAttribute('data-measure')") == "task_success"
    assert colours() == (
        {n: v["colors"]["task_success"] for n, v in view.items()},
        {n: v["teacher_colors"]["task_success"] for n, v in view.items()},
    )
    assert "task success rate" in legend.text and "0%" in legend.text and "100%" in legend.text
    assert "satisfaction (secondary)" in legend.text
    tip = browser.find_element(By.CSS_SELECTOR, 'g.node[data-id="telecom-bill-shock.1"] > title')
    assert "task success: student 0%, teacher 100%" in tip.get_attribute("textContent")
    assert "items met: student 83%, teacher 100%" in tip.get_attribute("textContent")

    browser.find_element(By.CSS_SELECTOR, 'g.node[data-id="telecom-bill-shock.1"]').click()
    details = browser.find_element(By.ID, "details")
    assert details.find_element(By.CSS_SELECTOR, 'dd[data-measure="task_success"]').text == "0% \u00b7 teacher 100%"
    assert details.find_element(By.CSS_SELECTOR, 'dd[data-measure="items_met"]').text == "83% \u00b7 teacher 100%"
    shown = chips()
    assert shown and all(c == _rgba(data["episodes"][e]["colors"]["task_success"]) for e, c in shown)
    _shot(browser, "tree-page-task-success.png")

    for measure, title in (("items_met", "items met"), ("satisfaction", "mean satisfaction")):
        browser.find_element(By.CSS_SELECTOR, f'input[data-measure="{measure}"]').click()
        assert browser.execute_script("return document.body.getAttribute('data-measure')") == measure
        assert colours() == (
            {n: v["colors"][measure] for n, v in view.items()},
            {n: v["teacher_colors"][measure] for n, v in view.items()},
        )
        assert legend.find_element(By.CSS_SELECTOR, ".measure-title").text.startswith(title)
        assert all(c == _rgba(data["episodes"][e]["colors"][measure]) for e, c in chips())
        _shot(browser, f"tree-page-{measure.replace('_', '-')}.png")
    assert colours()[0] != {n: v["colors"]["task_success"] for n, v in view.items()}  # the switch changed them
    assert _errors(browser) == []


def test_page_of_500_nodes_renders_and_search_finds_a_node(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run = load_run(big_run(tmp_path / "big"))
    page = write_page(run, tmp_path / "tree.html")
    took = _open(browser, page)
    assert not browser.find_element(By.ID, "dry-run").is_displayed()  # no record of scripted models: no banner
    assert len(browser.find_elements(By.CSS_SELECTOR, "#nodes g.node")) == 500
    assert took < 10, f"500 nodes took {took:.1f}s to draw"
    search = browser.find_element(By.ID, "search")
    search.send_keys("root-2.1.1", Keys.ENTER)
    assert browser.find_element(By.CSS_SELECTOR, "#details code").text == "root-2.1.1"
    assert browser.find_elements(By.CSS_SELECTOR, 'g.node.selected[data-id="root-2.1.1"]')
    _shot(browser, "tree-page-500.png")
    assert _errors(browser) == []


def test_report_opens_with_every_chart(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    files = write_report(load_run(scripted_run(tmp_path / "run")))
    browser.get(files.html.resolve().as_uri())
    assert browser.find_element(By.CSS_SELECTOR, "h1").text.endswith("(dry run)")
    first = browser.find_element(By.CSS_SELECTOR, "h1 + p")
    assert first.get_attribute("class") == "note" and first.is_displayed() and first.text == DRY_RUN
    images = browser.find_elements(By.CSS_SELECTOR, "img")
    assert len(images) == 7
    assert images[0].get_attribute("alt").startswith("task success and items met per condition")
    assert all(browser.execute_script("return arguments[0].naturalWidth", img) > 300 for img in images)
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1200, min(height + 120, 7000))
    _shot(browser, "report.png")
    browser.set_window_size(1500, 950)
    assert _errors(browser) == []
