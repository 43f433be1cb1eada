"""A real headless Chromium opens a clip's share page from `make run`'s stack and plays the clip: the page's
Content-Security-Policy lets the audio through play_url's redirect, and a screenshot is kept for the README."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from tests.chromium import Browser, chromium, console_messages  # noqa: F401  (the fixture)
from tests.local_stack import DEMO_GUID, REPO_ROOT, LocalStack, local_stack  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow
SCREENSHOT = REPO_ROOT / "docs" / "share-page.png"
PHONE = {"width": 390, "height": 290, "deviceScaleFactor": 2, "mobile": True}
PLAY_TIMEOUT_S = 30


def wait_until(page, expression: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            state = page.evaluate(
                "(a => a && {t: a.currentTime, paused: a.paused, ready: a.readyState, "
                "network: a.networkState, error: a.error && a.error.message})"
                "(document.querySelector('audio'))"
            )
            pytest.fail(
                f"{expression} still false after {timeout_s} s; audio: {state}; "
                f"console: {console_messages(page.events)}"
            )
        time.sleep(0.1)


def test_chromium_plays_the_clip_from_its_share_page(chromium: Browser, local_stack: LocalStack):
    answer = requests.get(
        f"{local_stack.base_url}/api/v1/audio_clips/{DEMO_GUID}",
        params={"start_time_ms": 60000, "duration_ms": 30000},
        timeout=30,
    ).json()
    share_url = answer["share_url"]
    assert share_url.startswith(f"{local_stack.base_url}/clips/{DEMO_GUID}?")

    page = chromium.page()
    for domain in ("Page", "Runtime", "Log"):
        page.call(f"{domain}.enable")
    page.call("Emulation.setDeviceMetricsOverride", **PHONE)
    page.call("Page.navigate", url=share_url)
    page.wait("Page.loadEventFired", timeout_s=30)
    assert page.evaluate("document.querySelector('h1').textContent") == answer["episode_title"]

    assert page.evaluate("document.querySelector('audio').play().then(() => 'playing', e => String(e))") == "playing"
    wait_until(page, "document.querySelector('audio').currentTime > 2", PLAY_TIMEOUT_S)
    assert page.evaluate("document.querySelector('audio').error") is None
    assert not [m for m in console_messages(page.events) if "Content Security Policy" in m]

    # A still picture for the README: paused at a fixed time, so that each run draws the same pixels.
    page.evaluate("(a => { a.pause(); a.currentTime = 10; })(document.querySelector('audio'))")
    wait_until(
        page,
        "(a => a.paused && !a.seeking && Math.abs(a.currentTime - 10) < 0.01)(document.querySelector('audio'))",
        10,
    )
    shot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
    page.close()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.write_bytes(shot)


def test_the_share_page_over_http_is_small_quick_and_leads_to_its_oembed(local_stack: LocalStack, capsys):
    from html.parser import HTMLParser

    share_url = requests.get(
        f"{local_stack.base_url}/api/v1/audio_clips/{DEMO_GUID}",
        params={"start_time_ms": 30000, "duration_ms": 20000},
        timeout=30,
    ).json()["share_url"]
    first_bytes = []
    for _ in range(5):  # a hit after the clip route cut it: the catalog lookup and two S3 HEADs
        response = requests.get(share_url, timeout=30, stream=True)
        first_bytes.append(response.elapsed.total_seconds())
        page = response.content.decode()
    assert response.status_code == 200 and len(page.encode()) < 6_000

    class Discovery(HTMLParser):
        href = ""

        def handle_starttag(self, tag, attrs):
            if tag == "link" and dict(attrs).get("type") == "application/json+oembed":
                self.href = dict(attrs)["href"] or ""

    discovery = Discovery()
    discovery.feed(page)
    oembed = requests.get(discovery.href, timeout=30)
    assert oembed.status_code == 200 and oembed.json()["type"] == "rich"
    with capsys.disabled():
        print(
            f"\n[measure] share page: {len(page.encode())} bytes, time to headers (median of 5) "
            f"{sorted(first_bytes)[2] * 1000:.0f} ms"
        )
