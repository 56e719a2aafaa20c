"""
Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by
its ``chromedriver`` through Selenium (never a downloaded browser or
driver). Screenshots go to ``tests/artifacts/`` (ignored by git).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "tests" / "artifacts" / "dashboard"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Without the background-networking switches Chromium keeps trying to reach
# its update and sync services, and its own connections fail on a closed network.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1800",
)
# Run before any page script: record alert() calls (and keep them from blocking).
ALERT_TRAP = "window.__alerts = []; window.alert = (m) => window.__alerts.push(String(m));"

T = TypeVar("T")


def browser_available() -> str | None:
    """Why the browser tests cannot run here, or None if they can."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not path.exists():
            return f"{path} is missing (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


class Browser:
    """One headless Chromium with a fresh profile."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="peerd-chromium-"))
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(
            options=options, service=Service(executable_path=str(CHROMEDRIVER))
        )
        self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": ALERT_TRAP})
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def get(self, url: str) -> None:
        """Open ``url``."""
        self.driver.get(url)

    def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` in the page (``return ...`` for a value)."""
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> Any:
        """The first element matching ``css``."""
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[Any]:
        """Every element matching ``css``."""
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        """The text content of the first element matching ``css`` ('' if none)."""
        return self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';", css
        )

    def screenshot(self, name: str) -> Path:
        """Save a PNG of the page as ``tests/artifacts/dashboard/NAME.png``."""
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def alerts(self) -> list[str]:
        """The ``alert()`` calls the page made."""
        return self.js("return window.__alerts || [];")

    def cookies(self) -> dict[str, str]:
        """The cookies of the current page."""
        return {c["name"]: c["value"] for c in self.driver.get_cookies()}

    def console_errors(self) -> list[str]:
        """Severe messages from the page's console since the last call."""
        return [e["message"] for e in self.driver.get_log("browser") if e["level"] == "SEVERE"]

    def close(self) -> None:
        """Quit Chromium and remove its profile."""
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something true (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:
            last = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last})" if last else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{extra}")
        time.sleep(interval)
