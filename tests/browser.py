"""Pages opened in a real headless Chromium (Debian's `chromium`, driven by Playwright): what the
console said, which requests failed, which images did not load, and a screenshot beside the page."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Headless, and quiet on a machine with no network: no background fetches, no component updates.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
IMAGES = """() => Array.from(document.images).map(image => ({
    src: image.currentSrc.slice(0, 80), loaded: image.complete && image.naturalWidth > 0}))"""


def chromium() -> str | None:
    """Debian's Chromium binary (its /usr/bin/chromium is a launcher script)."""
    binary = Path("/usr/lib/chromium/chromium")
    return str(binary) if binary.exists() else shutil.which("chromium")


@dataclass
class Visit:
    url: str
    screenshot: Path
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""

    @property
    def problems(self) -> list[str]:
        broken = [f"image not loaded: {image['src']}" for image in self.images if not image["loaded"]]
        return [*self.console_errors, *self.page_errors, *self.failed_requests, *broken]


def visit(browser: Any, url: str, screenshot: Path, wait_for: str | None = None, timeout_ms: int = 30_000) -> Visit:
    """Open `url`, wait for the page and, for pages that render in script (and keep polling, so
    the network never idles), for the text `wait_for`; save a full-page screenshot to `screenshot`."""
    seen = Visit(url, screenshot)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.on(
        "console",
        lambda message: (
            seen.console_errors.append(f"console {message.type}: {message.text}") if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: seen.page_errors.append(f"page error: {error}"))
    page.on(
        "requestfailed",
        lambda request: seen.failed_requests.append(f"request failed: {request.url[:120]} ({request.failure})"),
    )
    page.on(
        "response",
        lambda response: (
            seen.failed_requests.append(f"HTTP {response.status}: {response.url[:120]}")
            if response.status >= 400
            else None
        ),
    )
    try:
        page.goto(url, wait_until="load", timeout=timeout_ms)
        if wait_for:
            page.get_by_text(wait_for, exact=False).first.wait_for(timeout=timeout_ms)
        else:
            page.wait_for_load_state("networkidle", timeout=timeout_ms)
        seen.images = page.evaluate(IMAGES)
        seen.text = page.inner_text("body")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
    finally:
        page.close()
    return seen


def visit_file(browser: Any, page: Path) -> Visit:
    """A page written to disk, its screenshot beside it (<page>.png)."""
    return visit(browser, page.resolve().as_uri(), page.with_suffix(".png"))
