"""``--scheduler`` and the Dask options of ``scan`` and ``search`` against addresses that
are not a Dask scheduler (issue 25): a web server that says nothing until asked, a
service that answers HTTP 403 at once, a closed port, an address that does not parse.
Each ends within seconds with a message naming ``--scheduler``, exit 2, no traceback."""
from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest
from bad_inputs_common import run_cli

from shallowcnn.model import ShallowCNN

pytest.importorskip("distributed", reason="needs the [dask] extra")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.npz"
    ShallowCNN(seed=0, channels=(2, 3), kernel_size=5).save(path)
    return path


def silent_http_server():
    """``python -m http.server``: accepts, then waits for a request."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"tcp://127.0.0.1:{server.server_address[1]}", server.shutdown


def answering_403():
    """A TCP service that sends an HTTP 403 as soon as a connection opens."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            time.sleep(0.5)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, f"tcp://127.0.0.1:{listener.getsockname()[1]}", lambda: (stop.set(), listener.close())


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return None, f"tcp://127.0.0.1:{port}", lambda: None


PEERS = {"http-server": silent_http_server, "answers-403": answering_403, "closed-port": closed_port}


def command(name, model_file, small_store, tiny_phantom, tmp_path):
    _, images = tiny_phantom
    if name == "scan":
        return ["scan", model_file, images[0].dicom_path, "-o", tmp_path / "out", "--quiet"]
    return ["search", small_store[0], "-o", tmp_path / "out", "--trials", "1", "--epochs", "1", "--quiet"]


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize("name", ["scan", "search"])
def test_a_scheduler_that_is_not_dask_is_named_within_seconds(peer, name, model_file, small_store, tiny_phantom,
                                                              tmp_path, capsys):
    _, address, stop = PEERS[peer]()
    try:
        start = time.monotonic()
        status, out, err = run_cli(capsys, command(name, model_file, small_store, tiny_phantom, tmp_path)
                                   + ["--scheduler", address])
        assert time.monotonic() - start < 30
    finally:
        stop()
    assert status == 2 and "--scheduler" in err and address in err, err
    assert "not a Dask scheduler" in err or "sent nothing" in err or "cannot connect" in err


@pytest.mark.parametrize("option,value", [("--scheduler", "::::garbage"), ("--scheduler", "http://x:80/path"),
                                          ("--scheduler", "tcp://host:99999"), ("--workers", "-1"),
                                          ("--workers", "0"), ("--numba-threads", "-4")])
@pytest.mark.parametrize("name", ["scan", "search"])
def test_bad_dask_options_are_refused_when_read(option, value, name, model_file, small_store, tiny_phantom,
                                                tmp_path, capsys):
    status, _, err = run_cli(capsys, command(name, model_file, small_store, tiny_phantom, tmp_path) + [option, value])
    assert status == 2 and option in err, err
    assert not (tmp_path / "out").exists()
