"""``leaderboard.html``: every Markdown row is in the page, and in headless Chromium what a user sees works:
the rows, the sort order after clicking a header, the filters, the per-class view a row links to.

The data is the committed quick-suite reference (real records and predictions, no training), with its
``kd`` and ``la_kd`` records left out of the local folder so that they come back as reference rows.
"""
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from benchmark.reference import REFERENCE_ENV
from benchmark.results import regenerate

REPO = Path(__file__).resolve().parent.parent
QUICK = REPO / "results" / "reference" / "quick"
INSTALL = "apt-get install -y chromium chromium-driver && pip install selenium (or pip install -e '.[test]')"


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """A results folder of the quick reference minus ``kd`` and ``la_kd`` (the merge brings them back as reference
    rows)."""
    if not (QUICK / "runs").is_dir():
        pytest.skip(f"no committed reference in {QUICK}")
    out = tmp_path_factory.mktemp("board")
    shutil.copytree(QUICK / "runs", out / "runs", ignore=shutil.ignore_patterns("*_kd_s*"))
    mp = pytest.MonkeyPatch()
    mp.setenv(REFERENCE_ENV, str(QUICK.parent))
    try:
        assert regenerate(out, reference=True) is not None
    finally:
        mp.undo()
    return out


class _Rows(HTMLParser):
    """Every ``<tr data-label>`` of the page: its attributes and its cells' text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows, self._row, self._cell = {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-label" in attrs:
            self._row = {"attrs": attrs, "cells": []}
            self.rows[attrs["data-label"]] = self._row
        elif tag == "td" and self._row is not None:
            self._cell = ""

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row["cells"].append(" ".join(self._cell.split()))
            self._cell = None
        elif tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


def _md_rows(md: str):
    """The cells of every body row of every table of leaderboard.md (bold and code marks removed)."""
    rows = []
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| method") and not set(line) <= set("|- "):
            cells = [re.sub(r"^\*\*(.*)\*\*$", r"\1", c.strip()).strip("`") for c in line.strip().strip("|").split("|")]
            rows.append(cells)
    return rows


def test_every_markdown_row_is_in_the_page(board):
    md_rows = _md_rows((board / "leaderboard.md").read_text())
    parser = _Rows()
    parser.feed((board / "leaderboard.html").read_text())
    assert len(md_rows) == len(parser.rows) >= 3
    for cells in md_rows:
        html_row = parser.rows[cells[1]]  # the settings label
        for cell in cells:
            assert cell in html_row["cells"], (cell, html_row["cells"])
    kd = [r for r in md_rows if r[0] == "kd (ref)"]
    assert kd and "reference" in parser.rows[kd[0][1]]["attrs"]["class"]


def test_page_is_self_contained(board):
    text = (board / "leaderboard.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text)  # no network: no CDN, no remote image
    assert "data:image/png;base64," in text and "<script>" in text
    assert "Shared settings:" in text and "Methods:" in text  # the legends of leaderboard.md


# ----------------------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by selenium; skipped, saying what to install, where either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        pytest.skip(f"Chromium or chromedriver is not installed; install with: {INSTALL}")
    webdriver = pytest.importorskip("selenium.webdriver", reason=f"selenium is not installed; {INSTALL}")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1600,1000"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
    yield drv
    drv.quit()


def _visible_rows(browser):
    from selenium.webdriver.common.by import By

    return [tr for tr in browser.find_elements(By.CSS_SELECTOR, "table.lb tbody tr") if tr.is_displayed()]


def _column(browser, name):
    from selenium.webdriver.common.by import By

    heads = [th.text.split()[0] for th in browser.find_elements(By.CSS_SELECTOR, "table.lb thead th")]
    i = heads.index(name)
    return [tr.find_elements(By.TAG_NAME, "td")[i] for tr in _visible_rows(browser)]


def test_browser_rows_sort_filter_and_per_class_link(board, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    browser.get((board / "leaderboard.html").as_uri())
    md_rows = _md_rows((board / "leaderboard.md").read_text())
    assert len(_visible_rows(browser)) == len(md_rows)
    # sort: a click on "tail" orders the rows by tail accuracy, best first; a second click reverses
    browser.find_element(By.CSS_SELECTOR, 'th[data-col="tail"]').click()
    tails = [float(td.get_attribute("data-sort")) for td in _column(browser, "tail")]
    assert tails == sorted(tails, reverse=True) and tails != [float(r[9].split(" ± ")[0]) for r in md_rows]
    browser.find_element(By.CSS_SELECTOR, 'th[data-col="tail"]').click()
    assert [float(td.get_attribute("data-sort")) for td in _column(browser, "tail")] == sorted(tails)
    # filter by method: one row left, and it says so
    Select(browser.find_element(By.ID, "filter-method")).select_by_value("kd")
    rows = _visible_rows(browser)
    assert [r.get_attribute("data-method") for r in rows] == ["kd"]
    assert "reference" in rows[0].get_attribute("class")
    assert browser.find_element(By.ID, "shown").text == "1 rows shown"
    # the row's per-class link opens its per-class table: one line per class
    rows[0].find_element(By.CSS_SELECTOR, "a.per-class").click()
    view = browser.find_element(By.ID, f"pc-{rows[0].get_attribute('data-label')}")
    assert view.get_attribute("open") is not None and view.is_displayed()
    assert len(view.find_elements(By.CSS_SELECTOR, "tbody tr")) == 10
    # the record link points at the reference's record file, which exists
    href = rows[0].find_element(By.CSS_SELECTOR, "a.record").get_attribute("href")
    assert href.startswith("file://") and Path(href[len("file://"):]).is_file()
    Select(browser.find_element(By.ID, "filter-method")).select_by_value("")
    assert len(_visible_rows(browser)) == len(md_rows)


def test_browser_screenshot_for_the_docs(board, browser, tmp_path):
    """A screenshot of the page (``LTKD_DOCS_SCREENSHOT=1`` also writes docs/img/leaderboard.png)."""
    browser.get((board / "leaderboard.html").as_uri())
    shot = tmp_path / "leaderboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    if os.environ.get("LTKD_DOCS_SCREENSHOT") == "1":
        (REPO / "docs" / "img").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "img" / "leaderboard.png")
