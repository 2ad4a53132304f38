"""The page of ``shallowcnn serve`` in a real browser: headless Debian chromium, driven by
Playwright with ``executable_path`` (Playwright's own browser download does not work here).

It starts the server on 127.0.0.1 (a free port, in a thread), opens the page, uploads a
phantom DICOM through the file input, waits for the result and checks that the detection
list, the mammogram and the heatmap appear and that clicking a detection shows its
144 x 144 window (and that a file dropped on the drop zone is chosen). A screenshot is always saved
into pytest's tmp folder; with
``SHALLOWCNN_SCREENSHOT=docs`` it is also written to docs/serve_page.png for the README.
"""
from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

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
            items.first.click()
            page.wait_for_function("() => document.getElementById('window-image').naturalWidth === 144")
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
