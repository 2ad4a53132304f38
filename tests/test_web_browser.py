"""The page of ``shallowcnn serve`` in a real browser: headless Debian chromium, driven by
Playwright with ``executable_path`` (Playwright's own browser download does not work here).

It starts the server on 127.0.0.1 (a free port, in a thread), opens the page, uploads a
phantom DICOM through the file input, waits for the result and checks that the detection
list, the mammogram and the heatmap appear and that clicking a detection shows its
144 x 144 window, its receptive field and the network's evidence points where the API puts
them, that the contrast (window/level) control changes the displayed mammogram, and that
the model panel says its patch metrics are per 1 cm^2 patch (and that a file dropped on
the drop zone is chosen). A screenshot is always saved into pytest's tmp folder; with
``SHALLOWCNN_SCREENSHOT=docs`` it is also written to docs/serve_page.png for the README.
"""
from __future__ import annotations

import io
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image, ImageStat

pytest.importorskip("starlette", reason="the web server needs the [web] extra: pip install '.[web]'")
uvicorn = pytest.importorskip("uvicorn", reason="the web server needs the [web] extra: pip install '.[web]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the [test] extra has it)")

CHROMIUM = os.environ.get("SHALLOWCNN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium executable (Debian: apt-get install chromium); .ci/run installs it as root",
                allow_module_level=True)

from shallowcnn.data.phantom import generate_phantom  # noqa: E402
from shallowcnn.model import ShallowCNN  # noqa: E402
from shallowcnn.web.app import create_app  # noqa: E402
from shallowcnn.web.bundled import BUNDLED_MODEL_PATH  # noqa: E402

DOCS_SCREENSHOT = Path(__file__).resolve().parent.parent / "docs" / "serve_page.png"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server_url():
    """The app on uvicorn in a background thread; stopped after the module."""
    backend = "numba"
    try:
        model = ShallowCNN.load(BUNDLED_MODEL_PATH, backend=backend)
    except Exception:  # pragma: no cover
        model = ShallowCNN.load(BUNDLED_MODEL_PATH, backend="numpy")
    app = create_app(model, BUNDLED_MODEL_PATH.name, bundled=True)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def demo_dicom(tmp_path_factory):
    """One phantom patient at the demo size (832 x 1024): a picture worth a screenshot."""
    images = generate_phantom(tmp_path_factory.mktemp("serve_phantom"), cases=1, seed=11, size="demo",
                              verbose=False)
    return max(images, key=lambda im: len(im.rois)).dicom_path


def test_page_scans_an_uploaded_dicom_in_chromium(server_url, demo_dicom, tmp_path):
    with sync_api.sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        except Exception as e:  # pragma: no cover - a chromium that cannot start here
            pytest.skip(f"chromium at {CHROMIUM} does not start: {e}")
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            offsite = []
            page.on("request", lambda r: offsite.append(r.url) if not r.url.startswith(server_url) else None)
            page.goto(server_url + "/")
            page.wait_for_selector("#bundled-warning:not([hidden])")
            assert "never seen a real mammogram" in page.inner_text("#bundled-warning")
            # drag and drop: a dropped file is chosen like one from the file input
            page.evaluate("""() => {
                const drop = new DataTransfer();
                drop.items.add(new File([new Uint8Array(200)], "dropped.dcm"));
                document.getElementById("drop-zone").dispatchEvent(
                    new DragEvent("drop", {dataTransfer: drop, bubbles: true, cancelable: true}));
            }""")
            assert "dropped.dcm" in page.inner_text("#file-name")
            assert page.is_enabled("#scan-button")
            page.set_input_files("#file-input", str(demo_dicom))
            page.click("#scan-button")
            page.wait_for_selector("#detections li", timeout=120_000)
            page.wait_for_function("() => document.getElementById('mammogram').naturalWidth > 0")
            page.wait_for_function("() => document.getElementById('heatmap').width > 0")
            items = page.locator("#detections li")
            assert items.count() >= 1
            assert "p = " in items.first.inner_text()
            assert page.locator("#marks circle").count() == items.count()
            assert "per 1 cm\u00b2 patch" in page.inner_text("#model-meta")
            items.first.click()
            page.wait_for_function("() => document.getElementById('window-image').naturalWidth === 144")
            # the evidence of the chosen detection: one dot per filter that adds to the logit,
            # at the API's positions; the 17 x 17 receptive field around the detection
            chosen = page.evaluate("() => state.chosen")
            active = [e for e in chosen["evidence"] if e["contribution"] != 0]
            dots = page.locator("#marks circle.evidence")
            assert dots.count() == len(active) >= 1
            scale = page.evaluate("() => state.result.image.scale_original_px_per_scanned_px")
            drawn = {int(dots.nth(k).get_attribute("data-filter")): (float(dots.nth(k).get_attribute("cx")),
                                                                     float(dots.nth(k).get_attribute("cy")))
                     for k in range(dots.count())}
            for e in active:
                assert drawn[e["filter"]] == pytest.approx(((e["x"] + 0.5) / scale, (e["y"] + 0.5) / scale))
            field = page.locator("#marks rect.field")
            assert field.count() == 1 and float(field.get_attribute("width")) == pytest.approx(17)
            assert float(field.get_attribute("x")) + 8.5 == pytest.approx((chosen["x"] + 0.5) / scale)
            assert page.locator("#evidence-list li").count() == len(active)
            assert page.is_visible("#evidence-box")
            # the contrast control: a narrow window low in the grey range brightens the image
            def brightness(name):
                shot = page.locator("#viewport").screenshot(path=str(tmp_path / f"viewport_{name}.png"))
                return ImageStat.Stat(Image.open(io.BytesIO(shot)).convert("L")).mean[0]
            before = brightness("before")
            page.evaluate("""() => {
                for (const [id, v] of [["level", "40"], ["width", "60"]]) {
                    const input = document.getElementById(id);
                    input.value = v;
                    input.dispatchEvent(new Event("input", {bubbles: true}));
                }
            }""")
            assert page.get_attribute("#window-level feFuncR", "slope") == f"{255 / 60:.4f}"
            brighter = brightness("brighter")
            assert brighter > before + 10, (before, brighter)
            page.click("#contrast-reset")
            assert abs(brightness("reset") - before) < 2
            assert page.get_attribute("#download-csv", "href").startswith("/api/results/")
            assert page.locator("#image-meta").inner_text().count("832 x 1024") >= 1
            assert offsite == [], f"the page fetched from elsewhere: {offsite}"
            shot = tmp_path / "serve_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("SHALLOWCNN_SCREENSHOT") == "docs":
                from shallowcnn.storage import atomic_write_bytes
                atomic_write_bytes(DOCS_SCREENSHOT, shot.read_bytes())
        finally:
            browser.close()
