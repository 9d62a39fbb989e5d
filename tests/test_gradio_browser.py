"""The Gradio demo in a real browser: headless Debian Chromium driven by Playwright uploads a non-image
(a readable message), then an example IR frame; sets the steps, runs it, checks the result is 4x the
input, switches the palette, loads an example, and saves a screenshot.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``) and ``pip install playwright``; no
``playwright install``: the system browser is used.
"""

from __future__ import annotations

import time
from pathlib import Path

import PIL.Image
import pytest

pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright (pip install playwright)")

import test_gradio_app  # noqa: E402  (after the skip above)
from test_gradio_app import REPO, running_app, write_image  # noqa: E402

pipeline_dir = test_gradio_app.pipeline_dir  # the saved test-preset pipeline fixture, shared

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
EXAMPLES = sorted((REPO / "examples" / "images").glob("*.png"))


@pytest.fixture
def browser_page(tmp_path):
    """A page of headless Chromium with a fresh profile (``--user-data-dir``) under ``tmp_path``."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # launch_persistent_context passes user_data_dir to Chromium as --user-data-dir
        context = playwright.chromium.launch_persistent_context(
            tmp_path / "chromium-profile", executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(120_000)
            yield page
        finally:
            context.close()


def _shown_sizes(page) -> list[tuple[int, int]]:
    """Natural sizes of the loaded images in the before/after slider."""
    return page.eval_on_selector_all(
        "#result img", "images => images.filter(i => i.complete && i.naturalWidth > 0)"
                       ".map(i => [i.naturalWidth, i.naturalHeight])",
    )


@pytest.mark.slow
@pytest.mark.browser
def test_browser_upload_upscale_screenshot(browser_page, pipeline_dir, tmp_path):
    page = browser_page
    # a real example frame (160x128) when the repository has them, else a small made-up one
    image_path = EXAMPLES[0] if EXAMPLES else write_image(tmp_path / "frame.png", size=(40, 32))
    with PIL.Image.open(image_path) as image:
        width, height = image.size
    start = time.perf_counter()
    fake = tmp_path / "fake.png"
    fake.write_bytes(b"not an image at all")
    with running_app(pipeline_dir, tmp_path / "server", max_pixels=640 * 512) as url:
        page.goto(url)
        # a bad upload: a readable message in the page, no stack trace, and the app carries on
        page.locator("#upload input[type=file]").set_input_files(str(fake))
        page.locator('#upload [aria-label="fake.png"]').wait_for()
        page.locator("#run").click()
        toast = page.get_by_test_id("toast-body")
        toast.wait_for()
        message = toast.inner_text()
        assert "fake.png is not a readable PNG, JPEG or TIFF image" in message and "Traceback" not in message
        page.get_by_test_id("toast-close").click()
        toast.wait_for(state="detached")
        page.locator("#upload").get_by_role("button", name="Clear").click()

        page.locator("#upload input[type=file]").set_input_files(str(image_path))
        page.locator(f'#upload [aria-label="{image_path.name}"]').wait_for()  # the file row names it
        steps = page.locator("#steps input[type=number]")
        steps.fill("2")
        steps.press("Enter")
        page.locator("#run").click()

        # the full-resolution download appears when the run is done
        download = page.locator("#download a[download]")
        download.wait_for()
        assert download.get_attribute("download") == f"{image_path.stem}_x4.png"
        page.wait_for_function("document.querySelectorAll('#result img').length >= 2")
        page.wait_for_function(
            "[...document.querySelectorAll('#result img')].every(i => i.complete && i.naturalWidth > 0)"
        )
        assert _shown_sizes(page) == [[4 * width, 4 * height]] * 2  # bicubic and result, both x4
        info = page.locator("#info").inner_text()
        assert f"{width}x{height}" in info and f"{4 * width}x{4 * height}" in info and "2 steps" in info
        assert page.get_by_test_id("toast-body").count() == 0  # no error message this time

        # a palette changes what is shown, without rerunning the model
        before = page.eval_on_selector_all("#result img", "images => images.map(i => i.src)")
        page.locator("#palette input").click()
        page.get_by_role("option", name="Inferno").click()
        page.wait_for_function(
            "before => [...document.querySelectorAll('#result img')].some((i, k) => i.src !== before[k])", arg=before
        )
        assert page.locator("#info").inner_text() == info

        if len(EXAMPLES) > 1:  # an example chip puts its file into the upload box
            page.get_by_text(EXAMPLES[1].name, exact=True).click()
            page.locator(f'#upload [aria-label="{EXAMPLES[1].name}"]').wait_for()

        screenshot = tmp_path / "gradio_app.png"
        page.screenshot(path=str(screenshot), full_page=True)
    elapsed = time.perf_counter() - start
    assert screenshot.stat().st_size > 10_000
    print(f"browser test: {elapsed:.1f} s; screenshot: {screenshot}")
