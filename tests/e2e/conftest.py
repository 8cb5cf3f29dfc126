"""Real-browser fixtures: Debian's chromium driven by Playwright's sync API (never
`playwright install`). Without chromium the tests skip locally and fail in CI."""
import shutil
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import skip_or_fail

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / "screenshots"


@pytest.fixture(scope="module")
def browser(django_db_setup, live_server):
    """One chromium per module. The test database and live server exist before Playwright
    starts, and while it runs DJANGO_ALLOW_ASYNC_UNSAFE is set: Playwright's sync API keeps an
    event loop in this thread, which makes Django take the test body (and the database flush
    after it) for async code and refuse ORM calls. Restored when the module ends."""
    executable = shutil.which("chromium")
    if executable is None:
        skip_or_fail("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS,
                                                 headless=True)
            yield browser
            browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB")
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def screenshot(page):
    """screenshot("name") -> saves var/screenshots/name.png (full page) and returns its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def shoot(name: str) -> Path:
        path = SCREENSHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return shoot
