"""The scoring page in a real headless browser (Debian Chromium driven by Playwright)."""

from __future__ import annotations

import shutil

import httpx
import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
API_KEY = "test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert shutil.which(CHROMIUM) or shutil.os.path.exists(CHROMIUM), (
        "install Debian's chromium (scripts/setup.sh test)"
    )
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def _upload(page, url, image_path, key, threshold):
    page.goto(url + "/")
    page.fill("#apikey", key)
    page.fill("#threshold", str(threshold))
    page.set_input_files("#file", str(image_path))
    with page.expect_response(lambda r: "/invocations" in r.url) as resp_info:
        page.click("#submit")
    return resp_info.value


def test_upload_bccd_image_draws_every_detection(browser, live_server, shared_datasets):
    image = shared_datasets / "bccd" / "BCCD" / "JPEGImages" / "BloodImage_00001.jpg"
    page = browser.new_page()
    external = []
    page.on(
        "request",
        lambda r: external.append(r.url) if not r.url.startswith((live_server.url, "blob:", "data:")) else None,
    )
    resp = _upload(page, live_server.url, image, API_KEY, 0.3)
    assert resp.status == 200
    page.wait_for_function("document.body.dataset.state === 'done'")
    returned = page.evaluate("window.lastResult.predictions[0].detections")
    # the same request made directly gets the same detections
    direct = httpx.post(
        f"{live_server.url}/invocations?score_threshold=0.3",
        content=image.read_bytes(),
        headers={"Content-Type": "image/jpeg", "X-API-Key": API_KEY},
    ).json()["predictions"][0]["detections"]
    assert returned == direct
    assert returned and all(d["score"] >= 0.3 for d in returned)
    drawn = int(page.get_attribute("#canvas", "data-boxes-drawn"))
    assert drawn == len(returned)
    assert page.locator("#detections tbody tr.detection").count() == len(returned)
    first_row = page.locator("#detections tbody tr.detection").first.inner_text()
    assert returned[0]["class_name"] in first_row
    assert page.evaluate("[document.getElementById('canvas').width, document.getElementById('canvas').height]") == [
        640,
        480,
    ]
    # the canvas holds the image with coloured box outlines: a pixel on the first box's top edge has the box colour
    ymin, xmin, _ymax, xmax = returned[0]["box_pixels"]
    px = page.evaluate(
        f"Array.from(document.getElementById('canvas').getContext('2d')"
        f".getImageData({int((xmin + xmax) / 2)}, {round(ymin)}, 1, 1).data)"
    )
    colours = {1: (0xE6, 0x19, 0x4B), 2: (0x3C, 0xB4, 0x4B), 3: (0x43, 0x63, 0xD8)}
    expected = colours[returned[0]["class_id"]]
    assert all(abs(a - b) <= 40 for a, b in zip(px[:3], expected)), (px, expected)
    assert "detection(s) drawn" in page.inner_text("#status")
    assert external == []  # no CDN or other outside request
    page.close()


def test_wrong_key_shows_error_and_draws_nothing(browser, live_server, shared_datasets):
    image = shared_datasets / "bccd" / "BCCD" / "JPEGImages" / "BloodImage_00001.jpg"
    page = browser.new_page()
    resp = _upload(page, live_server.url, image, "wrong-key-0123456789abcdef", 0.3)
    assert resp.status == 401
    page.wait_for_function("document.getElementById('status').textContent.startsWith('error')")
    assert "401" in page.inner_text("#status")
    assert page.get_attribute("#canvas", "data-boxes-drawn") == "0"
    page.close()
