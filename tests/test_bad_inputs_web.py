"""``shallowcnn serve`` against bad and hostile clients (issue 25): stalled bodies,
decompression bombs, file names that look like formulas, foreign Host and Origin headers,
and options that cannot work. The stalled-upload tests talk raw HTTP to a real uvicorn
on 127.0.0.1, since only a real server has sockets that can stall."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
import warnings

import pytest
from bad_inputs_common import png_claiming, run_cli

pytest.importorskip("starlette", reason="the web server needs the [web] extra: pip install '.[web]'")
pytest.importorskip("python_multipart", reason="the web server needs python-multipart ([web] extra)")
httpx = pytest.importorskip("httpx", reason="Starlette's TestClient needs httpx")
uvicorn = pytest.importorskip("uvicorn")

with warnings.catch_warnings():   # Starlette 1.x suggests httpx2; httpx still works
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from starlette.testclient import TestClient  # noqa: E402

from shallowcnn.model import ShallowCNN  # noqa: E402
from shallowcnn.web.app import SECURITY_HEADERS, create_app  # noqa: E402
from shallowcnn.web.bundled import BUNDLED_MODEL_PATH  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return ShallowCNN.load(BUNDLED_MODEL_PATH, backend="numba")


@pytest.fixture(scope="module")
def client(model):
    app = create_app(model, "m", max_upload_mb=4)
    with TestClient(app, base_url="http://localhost") as c:
        yield c


@pytest.fixture(scope="module")
def phantom_dicom(tiny_phantom):
    _, images = tiny_phantom
    return images[0].dicom_path


@contextlib.contextmanager
def real_server(app):
    """``app`` on uvicorn at 127.0.0.1:PORT in a thread; yields PORT."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def stalled_upload(port: int) -> socket.socket:
    """A connection that sends the headers and the start of a 1 MB upload, then nothing."""
    head = (b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.dcm"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n" + b"x" * 1000)
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"POST /api/scan HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 1000000\r\n\r\n" + head)
    return s


def test_six_stalled_uploads_do_not_stop_a_seventh_from_being_scanned(model, phantom_dicom):
    app = create_app(model, "m", render_overlay=False, body_idle_s=60)     # 1 worker + 4 waiting
    with real_server(app) as port:
        stalled = [stalled_upload(port) for _ in range(6)]
        try:
            time.sleep(0.5)
            response = httpx.post(f"http://127.0.0.1:{port}/api/scan", timeout=120,
                                  files={"file": ("good.dcm", phantom_dicom.read_bytes())})
            assert response.status_code == 200, response.text
            assert response.json()["file"]["name"] == "good.dcm"
            assert app.state.server.queue.taken == 0
        finally:
            for s in stalled:
                s.close()


def test_a_stalled_body_gets_408_and_holds_no_place(model):
    app = create_app(model, "m", render_overlay=False, body_idle_s=1)
    with real_server(app) as port:
        s = stalled_upload(port)
        try:
            assert app.state.server.queue.taken == 0
            answer = b""
            while b"stalled" not in answer and (chunk := s.recv(4096)):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"stalled" in answer
        finally:
            s.close()
        assert app.state.server.uploading == 0 and app.state.server.queue.taken == 0


@pytest.mark.parametrize("size", [(20000, 20000), (14000, 14000), (100000, 20)])
def test_an_image_declaring_too_many_pixels_gets_413(client, size):
    response = client.post("/api/scan", files={"file": ("bomb.png", png_claiming(*size))})
    assert response.status_code == 413, response.text
    message = response.json()["error"]
    assert "bomb.png" in message and "too large" in message


def test_a_file_named_like_a_formula_is_scanned(client, phantom_dicom):
    response = client.post("/api/scan", files={"file": ("IMG$1_$.dcm", phantom_dicom.read_bytes())})
    assert response.status_code == 200, response.text
    assert response.json()["urls"]["overlay"] is not None
    assert client.get(response.json()["urls"]["overlay"]).status_code == 200


@pytest.mark.parametrize("path", ["/", "/api/model", "/static/app.js", "/nowhere", "/api/results/x/y.png",
                                  "/api/results/x/detections.csv"])
def test_every_response_carries_the_security_headers(client, path):
    response = client.get(path)
    for key, value in SECURITY_HEADERS.items():
        assert response.headers.get(key) == value, (path, response.status_code, key)


@pytest.mark.parametrize("headers", [{"host": "evil.example"}, {"host": "evil.example:8000"},
                                     {"origin": "http://evil.example"}, {"origin": "null"}])
def test_a_foreign_host_or_origin_is_refused(client, headers):
    response = client.get("/api/model", headers=headers)
    assert response.status_code == 403
    assert "evil.example" in response.json()["error"] or "null" in response.json()["error"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("headers", [{"host": "127.0.0.1:8000"}, {"host": "[::1]:8000"},
                                     {"origin": "http://localhost:8000"}])
def test_local_names_are_accepted(client, headers):
    assert client.get("/api/model", headers=headers).status_code == 200


def test_host_option_adds_its_name_and_a_wildcard_host_warns(monkeypatch, capsys):
    started = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.append((app, kw)))
    status, _, err = run_cli(capsys, ["serve", "--host", "0.0.0.0", "--backend", "numpy"])
    assert status == 0 and "warning: --host 0.0.0.0" in err
    with TestClient(started[-1][0], base_url="http://scanner.lan") as c:        # any name
        assert c.get("/api/model").status_code == 200
    status, _, err = run_cli(capsys, ["serve", "--host", "scanner.lan", "--backend", "numpy"])
    assert status == 0 and "warning" not in err
    with TestClient(started[-1][0], base_url="http://scanner.lan") as c:
        assert c.get("/api/model").status_code == 200
        assert c.get("/api/model", headers={"host": "other.lan"}).status_code == 403


@pytest.mark.parametrize("option,value", [("--max-upload-mb", "inf"), ("--max-upload-mb", "nan"),
                                          ("--max-upload-mb", "0"), ("--workers", "0"), ("--workers", "-1"),
                                          ("--waiting", "-1")])
def test_bad_serve_options_are_refused_when_read(option, value, capsys):
    status, _, err = run_cli(capsys, ["serve", option, value])
    assert status == 2 and option in err
