"""``shallowcnn serve``'s API through Starlette's TestClient (no network, no browser).

The detections the API gives must be those of ``shallowcnn scan`` on the same file, and
every bad upload must get its own 4xx with a JSON ``error`` while the server keeps
serving. The real-browser test is tests/test_web_browser.py.
"""
from __future__ import annotations

import io
import json
import threading
import warnings

import numpy as np
import pytest

pytest.importorskip("starlette", reason="the web server needs the [web] extra: pip install '.[web]'")
pytest.importorskip("python_multipart", reason="the web server needs python-multipart ([web] extra)")
pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")

with warnings.catch_warnings():   # Starlette 1.x suggests httpx2; httpx still works
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient  # noqa: E402

from shallowcnn.cli import main  # noqa: E402
from shallowcnn.data.breast import breast_mask, to_uint8  # noqa: E402
from shallowcnn.model import ShallowCNN  # noqa: E402
from shallowcnn.web import app as web_app  # noqa: E402
from shallowcnn.web.app import create_app  # noqa: E402
from shallowcnn.web.bundled import BUNDLED_MODEL_PATH, NEVER_SAW_A_MAMMOGRAM  # noqa: E402
from shallowcnn.web.jobs import QueueFull, ScanQueue  # noqa: E402
from shallowcnn.web.scanner import encode_heatmap  # noqa: E402

try:
    from shallowcnn.kernels import get_backend
    get_backend("numba")
    BACKEND = "numba"
except Exception:  # pragma: no cover - numba is a dependency, but stay usable without it
    BACKEND = "numpy"


def png_of(pixels) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model():
    return ShallowCNN.load(BUNDLED_MODEL_PATH, backend=BACKEND)


@pytest.fixture(scope="module")
def client(model):
    app = create_app(model, BUNDLED_MODEL_PATH.name, bundled=True, max_upload_mb=4)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


@pytest.fixture(scope="module")
def phantom_dicom(tiny_phantom):
    """The tiny phantom's image with the most clusters (so that detections are not empty)."""
    _, images = tiny_phantom
    return max(images, key=lambda im: len(im.rois)).dicom_path


def cli_detections(tmp_path, image_path, threshold=None) -> list:
    """Detections of ``shallowcnn scan`` on the file, the reference for the API (both at the
    model's operating point unless a threshold is given)."""
    out = tmp_path / "cli"
    chosen = [] if threshold is None else ["--threshold", str(threshold)]
    status = main(["scan", str(BUNDLED_MODEL_PATH), str(image_path), "-o", str(out), "--backend", BACKEND,
                   *chosen, "--quiet"])
    assert status == 0
    return json.loads((out / f"{image_path.stem}.detections.json").read_text())["detections"]


def same_detections(api: list, cli: list) -> None:
    assert len(api) == len(cli)
    for a, c in zip(api, cli):
        assert (a["x"], a["y"], a["window_top_left"]) == (c["x"], c["y"], c["window_top_left"])
        assert a["probability"] == pytest.approx(c["probability"], rel=1e-6)


def test_bundled_model_is_small_and_says_it_never_saw_a_mammogram(client):
    assert BUNDLED_MODEL_PATH.stat().st_size < 100_000
    info = client.get("/api/model").json()
    assert info["bundled"] is True and info["warning"] == NEVER_SAW_A_MAMMOGRAM
    assert info["training"]["epochs"] >= 1 and 0.5 < info["training"]["test_metrics"]["roc_auc"] <= 1
    assert "phantom" in info["training"]["data"]
    assert info["limits"]["max_upload_bytes"] == 4 * 2**20
    page = client.get("/")
    assert page.status_code == 200 and "never seen a real mammogram" in page.text
    assert "Content-Security-Policy" in page.headers
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    # no CDN scripts or web fonts: every src/href on the page is on this server
    assert "http://" not in page.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in page.text


def test_dicom_scan_equals_shallowcnn_scan(client, phantom_dicom, tmp_path):
    response = client.post("/api/scan", files={"file": (phantom_dicom.name, phantom_dicom.read_bytes())})
    assert response.status_code == 200, response.text
    report = response.json()
    expected = cli_detections(tmp_path, phantom_dicom)
    assert expected, "the phantom image should give detections"
    same_detections(report["detections"], expected)
    image = report["image"]
    assert (image["width"], image["height"]) == (480, 560)
    assert image["pixel_spacing_mm"] == [0.07, 0.07] and report["file"]["format"] == "DICOM"
    assert set(report["timings"]) >= {"upload_s", "queue_s", "scan_s", "total_s"}
    # INbreast-style name: laterality and view come from it (the phantom header has none)
    assert image["laterality"] in ("L", "R") and image["view"] in ("CC", "MLO", "ML")
    det = report["detections"][0]
    box = det["window"]
    assert (box["width"], box["height"]) == (144, 144)
    assert (box["x"], box["y"]) == (det["window_top_left"][1] - 0.5, det["window_top_left"][0] - 0.5)
    # the network's evidence: 16 filters, the position is the strongest one's, inside the window
    assert len(det["evidence"]) == 16
    strongest = max(det["evidence"], key=lambda e: e["contribution"])
    assert (strongest["x"], strongest["y"]) == (det["x"], det["y"])
    assert box["x"] < det["x"] < box["x"] + box["width"] and box["y"] < det["y"] < box["y"] + box["height"]
    field = det["receptive_field"]
    assert field["width"] == 17 and (field["x"] + 8.5, field["y"] + 8.5) == (det["x"], det["y"])
    # the pictures behind the URLs
    for key in ("image", "heatmap", "overlay"):
        picture = client.get(report["urls"][key])
        assert picture.status_code == 200 and picture.content[:8] == b"\x89PNG\r\n\x1a\n"
    window = client.get(det["window_url"])
    from PIL import Image
    assert Image.open(io.BytesIO(window.content)).size == (144, 144)
    # downloads at another threshold equal a scan at that threshold
    lower = client.get(report["urls"]["detections_json"], params={"threshold": 0.3}).json()
    same_detections(lower["detections"], cli_detections(tmp_path / "t03", phantom_dicom, threshold=0.3))
    csv_lines = client.get(report["urls"]["detections_csv"]).text.strip().splitlines()
    assert csv_lines[0].startswith("x,y,probability") and len(csv_lines) == 1 + len(expected)
    assert float(csv_lines[1].split(",")[0]) == expected[0]["x"]


def test_png_scan_equals_shallowcnn_scan(client, tiny_phantom, tmp_path):
    from shallowcnn.data.inbreast import read_dicom_pixels
    _, images = tiny_phantom
    pixels = read_dicom_pixels(max(images, key=lambda im: len(im.rois)).dicom_path)
    path = tmp_path / "mammo.png"
    path.write_bytes(png_of(to_uint8(pixels, breast_mask(pixels))[0]))
    response = client.post("/api/scan", files={"file": ("mammo.png", path.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["file"]["format"] == "PNG"
    same_detections(response.json()["detections"], cli_detections(tmp_path, path))


def bad_uploads(phantom_dicom) -> dict:
    """name -> (filename, bytes, expected status, a word the error must contain)."""
    import pydicom
    from pydicom import uid
    from pydicom.encaps import encapsulate

    good = phantom_dicom.read_bytes()
    ds = pydicom.dcmread(io.BytesIO(good))
    ds.file_meta.TransferSyntaxUID = uid.MPEG2MPML          # no pixel decoder exists for video
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    ds["PixelData"].VR = "OB"
    mpeg = io.BytesIO()
    ds.save_as(mpeg, enforce_file_format=True)
    return {
        "not an image": ("notes.dcm", b"this is not a mammogram\n" * 20, 415, "not an image"),
        "truncated DICOM": ("cut.dcm", good[:len(good) * 2 // 3], 422, "truncated"),
        "unsupported transfer syntax": ("mpeg.dcm", mpeg.getvalue(), 415, "transfer syntax"),
        "smaller than a window": ("small.png", png_of(np.full((100, 120), 128, np.uint8)), 422, "smaller"),
        "over the size limit": ("big.png", bytes(5 * 2**20), 413, "limit"),
        "empty file": ("empty.png", b"", 400, "empty"),
    }


def test_every_bad_upload_gets_its_4xx_and_the_server_keeps_serving(client, phantom_dicom):
    state = client.app.state.server
    for name, (filename, data, status, word) in bad_uploads(phantom_dicom).items():
        response = client.post("/api/scan", files={"file": (filename, data)})
        assert response.status_code == status, (name, response.text)
        assert word in response.json()["error"], (name, response.json())
        assert str(state.upload_dir) not in response.json()["error"]      # no server paths leak
    assert client.post("/api/scan", data={"other": "x"}).status_code == 400            # no field "file"
    assert client.post("/api/scan", content=b"raw", headers={"content-type": "image/png"}).status_code == 400
    assert client.get("/api/results/nope/image.png").json()["error"]
    assert client.get("/api/nothing").status_code == 404
    # still serving, and no upload was left behind
    ok = client.post("/api/scan", files={"file": (phantom_dicom.name, phantom_dicom.read_bytes())})
    assert ok.status_code == 200
    assert list(state.upload_dir.iterdir()) == []
    assert state.queue.taken == 0


def test_size_limit_holds_while_streaming_without_content_length(client):
    state = client.app.state.server
    boundary = "xyzzy"

    def body():   # a chunked body: the server cannot know its size in advance
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n"
               f"Content-Type: image/png\r\n\r\n").encode()
        for _ in range(80):
            yield bytes(64 * 1024)                                     # 5 MiB > the 4 MiB limit
        yield f"\r\n--{boundary}--\r\n".encode()

    response = client.post("/api/scan", content=body(),
                           headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 413 and "limit" in response.json()["error"]
    assert list(state.upload_dir.iterdir()) == []


def test_upload_is_never_written_under_the_client_name(client, phantom_dicom, monkeypatch):
    seen = []
    real = web_app.scan_upload

    def spy(model, path, display_name, overlay=True):
        seen.append((path, path.exists(), display_name))
        return real(model, path, display_name, overlay=False)

    monkeypatch.setattr(web_app, "scan_upload", spy)
    response = client.post("/api/scan", files={"file": ("../../etc/evil name.dcm", phantom_dicom.read_bytes())})
    assert response.status_code == 200
    (path, existed, label), = seen
    state = client.app.state.server
    assert existed and path.parent == state.upload_dir and path.name.startswith("upload-")
    assert "evil" not in path.name and label == "evil name.dcm"
    assert not path.exists()                                            # deleted after the scan
    assert response.json()["urls"]["overlay"] is None
    assert (state.upload_dir.stat().st_mode & 0o777) == 0o700


def test_a_full_queue_answers_503_then_serves_again(model, phantom_dicom):
    app = create_app(model, "m", workers=1, waiting=0, render_overlay=False)
    with TestClient(app, base_url="http://localhost") as c:
        queue = app.state.server.queue
        queue.take_place()                                  # someone is scanning
        busy = c.post("/api/scan", files={"file": ("a.dcm", phantom_dicom.read_bytes())})
        assert busy.status_code == 503 and "busy" in busy.json()["error"]
        queue.give_back_place()
        assert c.post("/api/scan", files={"file": ("a.dcm", phantom_dicom.read_bytes())}).status_code == 200


def test_scan_queue_counts_places_across_threads():
    queue = ScanQueue(workers=2, waiting=3)
    results = []

    def grab():
        try:
            queue.take_place()
            results.append(True)
        except QueueFull:
            results.append(False)

    threads = [threading.Thread(target=grab) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 5 and queue.taken == 5
    for _ in range(5):
        queue.give_back_place()
    queue.take_place()
    queue.close()


def test_heatmap_encoding_by_hand():
    prob = np.array([[np.nan, 0.0, 1.0], [0.5, 0.25, np.nan]], dtype=np.float32)
    assert encode_heatmap(prob).tolist() == [[0, 1, 255], [128, 65, 0]]    # 1 + round(254 p)


def test_serve_command_refuses_bad_options_and_missing_models(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "none.npz")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:            # refused when the command line is read
        main(["serve", "--port", "0"])
    assert stop.value.code == 2
    assert "argument --port: must be a TCP port in 1..65535" in capsys.readouterr().err


def test_serve_binds_localhost_by_default():
    from shallowcnn.cli import build_parser
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.backend, args.model) == ("127.0.0.1", 8000, "auto", None)
