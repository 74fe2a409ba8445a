"""tests/browser.py itself: a real headless Chromium loads local pages and reports on them."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from tests.browser import _short_src, check_page, chromium_executable

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = chromium_executable()
    if exe is None:
        pytest.skip("no chromium on PATH and it cannot be installed here (needs root + apt-get on Debian)")
    return exe


def _png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _data_uri(color: tuple[int, int, int]) -> str:
    return "data:image/png;base64," + base64.b64encode(_png_bytes(color)).decode()


def _page(tmp_path: Path, body: str, title: str = "report") -> Path:
    html = tmp_path / "page.html"
    html.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head>"
        f"<body style='margin:0;background:#fff'>{body}</body></html>"
    )
    return html


@pytest.fixture(scope="module")
def mixed_page(chromium, tmp_path_factory):
    """Two good images (data: URI, relative file), one missing file, a console.error."""
    d = tmp_path_factory.mktemp("mixed")
    (d / "figs").mkdir()
    (d / "figs" / "good.png").write_bytes(_png_bytes((0, 128, 255)))
    html = _page(
        d,
        f"<h1>Mixed</h1>"
        f"<img alt='inline' src='{_data_uri((255, 0, 0))}'>"
        f"<img alt='file' src='figs/good.png'>"
        f"<img alt='gone' src='figs/missing.png'>"
        f"<script>console.error('cocon-test: something went wrong')</script>"
        # taller than the viewport, so full-page matters
        f"<div style='height:2500px;background:linear-gradient(#f80,#08f)'></div>",
        title="Mixed report",
    )
    return check_page(html, d / "shots" / "mixed.png", timeout_s=60)


def test_counts_images_and_names_only_the_broken_one(mixed_page):
    assert mixed_page.images == 3
    assert mixed_page.broken == ["figs/missing.png"]
    assert mixed_page.title == "Mixed report"
    assert not mixed_page.ok


def test_reports_console_errors(mixed_page):
    assert any("cocon-test: something went wrong" in e for e in mixed_page.console_errors), mixed_page.console_errors


def test_screenshot_is_a_full_page_non_blank_png(mixed_page):
    shot = mixed_page.screenshot
    assert shot.is_file()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(shot) as im:
        im = im.convert("RGB")
        assert im.height > 2500  # the whole page, not just the 900 px viewport
        lo, hi = zip(*im.getextrema())
        assert max(hi) - min(lo) > 100, "screenshot looks blank"
        assert len(im.getcolors(maxcolors=1 << 20) or range(1 << 20)) > 10


def test_page_with_only_good_images(chromium, tmp_path):
    (tmp_path / "a.png").write_bytes(_png_bytes((10, 200, 10)))
    html = _page(
        tmp_path,
        f"<img src='a.png'><img src='{_data_uri((0, 0, 0))}'>"
        # a lazy image far below the fold must load too
        f"<div style='height:3000px'></div><img loading='lazy' src='a.png'>",
    )
    res = check_page(html, tmp_path / "ok.png")
    assert res.images == 3
    assert res.broken == []
    assert res.console_errors == []
    assert res.ok
    assert res.screenshot.stat().st_size > 0


def test_broken_data_uri_is_shortened(chromium, tmp_path):
    bad = "data:image/png;base64," + "A" * 500
    html = _page(tmp_path, f"<img src='{bad}'>")
    res = check_page(html, tmp_path / "bad.png")
    assert res.images == 1
    assert res.broken == [_short_src(bad)]
    assert len(res.broken[0]) < 100 and res.broken[0].startswith("data:image/png")


def _live_chromium_pids() -> set[int]:
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"chrom" in cmd and state != "Z":
            pids.add(int(proc.name))
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc to list processes")
def test_browser_is_killed_when_the_page_times_out(chromium, tmp_path):
    before = _live_chromium_pids()
    # the load event never fires: the renderer spins forever
    html = _page(tmp_path, "<script>for (;;) {}</script>")
    with pytest.raises(Exception, match="(?i)timeout"):
        check_page(html, tmp_path / "never.png", timeout_s=3)
    left = _live_chromium_pids() - before
    assert not left, f"chromium processes left running: {left}"
