"""A real headless Chromium opens a clip's share page from `make run`'s stack: the waveform is drawn in the page
(inline SVG, no script, nothing refused by the page's Content-Security-Policy), and the card the page names as its
og:image opens as a 1200 x 630 PNG through the card route's redirect. Both pictures are kept for the README."""

from __future__ import annotations

import base64
import io
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

from tests.chromium import Browser, chromium, console_messages  # noqa: F401  (the fixture)
from tests.local_stack import DEMO_GUID, REPO_ROOT, LocalStack, local_stack  # noqa: F401  (the fixture)
from tests.test_share_page import Page

pytestmark = pytest.mark.slow
SCREENSHOT = REPO_ROOT / "docs" / "share-page-waveform.png"
CARD = REPO_ROOT / "docs" / "share-card.png"
PHONE = {"width": 390, "height": 420, "deviceScaleFactor": 2, "mobile": True}


def test_chromium_shows_the_waveform_on_the_share_page_and_opens_its_card(chromium: Browser, local_stack: LocalStack):
    share_url = requests.get(
        f"{local_stack.base_url}/api/v1/audio_clips/{DEMO_GUID}",
        params={"start_time_ms": 60000, "duration_ms": 30000},
        timeout=30,
    ).json()["share_url"]
    card_url = Page(requests.get(share_url, timeout=30).text).meta()["og:image"]
    assert urlsplit(card_url).path == f"/clips/{DEMO_GUID}/card.png"

    page = chromium.page()
    for domain in ("Page", "Runtime", "Log"):
        page.call(f"{domain}.enable")
    page.call("Emulation.setDeviceMetricsOverride", **PHONE)
    page.call("Page.navigate", url=share_url)
    page.wait("Page.loadEventFired", timeout_s=30)
    box = page.evaluate(
        "(r => ({w: r.width, h: r.height}))(document.querySelector('svg.wave').getBoundingClientRect())"
    )
    assert box["w"] > 300 and box["h"] > 40, box
    bars = page.evaluate("document.querySelector('svg.wave path').getAttribute('d').split('M').length - 1")
    assert bars == 90
    drawn = page.evaluate("document.querySelector('svg.wave path').getTotalLength()")
    assert drawn > 500, "the bars have length: the browser drew them"
    assert page.evaluate("document.scripts.length") == 0
    assert not [m for m in console_messages(page.events) if "Content Security Policy" in m]
    shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"

    page.call("Page.navigate", url=card_url)  # a browser accepts images: the card route answers the PNG itself
    page.wait("Page.loadEventFired", timeout_s=30)
    size = page.evaluate("(i => i && [i.naturalWidth, i.naturalHeight])(document.images[0])")
    assert size == [1200, 630]
    page.close()
    card = requests.get(card_url, timeout=30)  # Accept: */*, as link-preview crawlers send
    assert card.status_code == 200 and card.headers["Content-Type"] == "image/png"
    assert not card.history, "the PNG itself (contract 6), no redirect"
    signed = requests.get(card_url, headers={"Accept": "text/html"}, timeout=30)  # no image in Accept: 302
    assert signed.history and signed.history[0].status_code == 302 and signed.content == card.content
    assert Image.open(io.BytesIO(card.content)).size == (1200, 630)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(shot)
    CARD.write_bytes(card.content)
