"""A Snakemake HTML report opened in a real browser: Debian's Chromium, headless, driven by Playwright.

`chromium()` installs the browser when it is missing (scripts/chromium-up.sh, apt-get, as the SLURM tests install
slurm-wlm) or fails the test saying why; Playwright's own browser download needs a host these machines cannot
reach, so Playwright drives the Debian build. `opened(report)` loads the report as a reader would, and `shown`
clicks a result's view button, as a reader does, and returns what the browser rendered.
"""

import contextlib
import subprocess

import pytest

from slurmctl import REPO

# The flags that work on these machines (/work/.library/env/machines/python.md): no sandbox as root, and no
# background connections, which the closed network would refuse at every start.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 30_000


def chromium() -> str:
    """The path of Debian's Chromium, installed first if it is missing."""
    try:
        proc = subprocess.run(["bash", str(REPO / "scripts" / "chromium-up.sh")], capture_output=True, text=True,
                              timeout=900)  # fmt: skip
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"scripts/chromium-up.sh did not finish within 900 s:\n{error.stderr or ''}")
    if proc.returncode != 0:
        pytest.fail(f"scripts/chromium-up.sh failed (exit {proc.returncode}); Chromium is required for this test:\n"
                    f"{proc.stderr}")
    return proc.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def opened(report):
    """A browser page showing the report file `report`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(f"file://{report}")
            yield page
        finally:
            browser.close()


def shown(page, category: str, name: str):
    """Open `category` in the report's menu (from its start page) and click the view button of the result `name`;
    returns the page (an image) or the frame (an HTML page) the report then shows."""
    page.goto(page.url.split("#")[0])
    page.get_by_text(category, exact=True).first.click()
    page.locator("tr", has_text=name).first.locator("a").first.click()
    if name.endswith(".html"):
        page.wait_for_selector("iframe")
        return page.frame_locator("iframe")
    return page
