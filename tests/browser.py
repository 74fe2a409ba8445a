"""Open a local HTML file in a real headless Chromium, for tests of generated reports.

`check_page(html, screenshot)` loads the page (file:// URL, so relative images next to
the HTML resolve), waits for the load event and for every <img> (lazy ones too: the
page is scrolled through first), counts the images and the broken ones
(`img.complete && img.naturalWidth > 0` is a good one), collects console errors and
uncaught page errors, and saves a full-page PNG screenshot.

The browser is Debian's `chromium` (not a Playwright-downloaded build, which cannot be
fetched here), driven by the `playwright` PyPI package through `executable_path`.
`chromium_executable()` finds it, installing it with apt-get when we are root on Debian;
tests skip when it returns None.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_APT_TIMEOUT_S = 600


def _which_chromium() -> str | None:
    for name in _CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _can_apt_install() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return (
        geteuid is not None
        and geteuid() == 0
        and Path("/etc/debian_version").exists()
        and shutil.which("apt-get") is not None
    )


@functools.lru_cache(maxsize=None)
def chromium_executable() -> str | None:
    """The path of a Chromium/Chrome binary, or None when there is none and none can be had.

    When none is on PATH and we are root on Debian, installs Debian's `chromium`
    (apt-get update + install, quietly, with a timeout). Cached per process.
    """
    found = _which_chromium()
    if found or not _can_apt_install():
        return found
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # wait for the dpkg lock instead of failing when another process holds it
    lock = ["-o", "DPkg::Lock::Timeout=300"]
    deadline = time.monotonic() + _APT_TIMEOUT_S
    try:
        for cmd in (
            ["apt-get", *lock, "update", "-qq"],
            ["apt-get", *lock, "install", "-y", "-qq", "--no-install-recommends", "chromium"],
        ):
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            done = subprocess.run(
                cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=left
            )
            if done.returncode != 0:
                return None
    except (OSError, subprocess.TimeoutExpired):
        return None
    return _which_chromium()


@dataclass
class PageCheck:
    images: int
    broken: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    title: str = ""
    screenshot: Path = Path()

    @property
    def ok(self) -> bool:
        return not self.broken and not self.console_errors


def _short_src(src: str, keep: int = 48) -> str:
    if src.startswith("data:") and len(src) > keep:
        return f"{src[:keep]}...({len(src)} chars)"
    return src


# scroll to the bottom in viewport steps so loading="lazy" images start, then back up
_SCROLL_JS = """async () => {
  const step = Math.max(200, window.innerHeight);
  const height = () => Math.max(document.body ? document.body.scrollHeight : 0,
                                document.documentElement.scrollHeight);
  for (let y = 0; y < height() && y < 200000; y += step) {
    window.scrollTo(0, y);
    await new Promise(r => setTimeout(r, 30));
  }
  window.scrollTo(0, height());
  await new Promise(r => setTimeout(r, 30));
  window.scrollTo(0, 0);
}"""

_IMAGES_DONE_JS = "() => Array.from(document.images).every(img => img.complete)"

_IMAGES_JS = """() => Array.from(document.images).map(img => ({
  src: img.getAttribute('src') || img.currentSrc || img.src || '',
  ok: img.complete && img.naturalWidth > 0,
}))"""


def check_page(html: Path, screenshot: Path, timeout_s: float = 60) -> PageCheck:
    """Load `html` in headless Chromium; report images, broken images, console errors.

    Raises RuntimeError when no Chromium can be had; playwright's errors (e.g. a
    TimeoutError) propagate. The browser is closed (its process killed) in every case.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the `test` extra has it
        raise RuntimeError(
            "tests/browser.py needs the `playwright` package (pip install -e '.[test]'); "
            "no browser download is needed, it drives Debian's chromium"
        ) from exc

    exe = chromium_executable()
    if exe is None:
        raise RuntimeError("no chromium found on PATH and it could not be installed")

    html = Path(html).resolve()
    screenshot = Path(screenshot)
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    timeout_ms = timeout_s * 1000
    errors: list[str] = []

    def on_console(msg) -> None:
        if msg.type != "error":
            return
        text = msg.text
        loc = msg.location or {}
        if loc.get("url"):
            text += f" ({loc['url']}:{loc.get('lineNumber', 0)})"
        errors.append(text)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=exe,
            headless=True,
            # root cannot run the sandbox; playwright passes --no-sandbox for this too
            chromium_sandbox=False,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
            timeout=timeout_ms,
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(timeout_ms)
            page.on("console", on_console)
            page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
            page.goto(html.as_uri(), wait_until="load")
            page.evaluate(_SCROLL_JS)
            try:  # lazy images started by the scroll; a hung one counts as broken
                page.wait_for_function(_IMAGES_DONE_JS, timeout=min(timeout_ms, 10_000))
            except Exception:  # noqa: BLE001 - playwright TimeoutError
                pass
            imgs = page.evaluate(_IMAGES_JS)
            title = page.title()
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()

    return PageCheck(
        images=len(imgs),
        broken=[_short_src(i["src"]) for i in imgs if not i["ok"]],
        console_errors=errors,
        title=title,
        screenshot=screenshot,
    )
