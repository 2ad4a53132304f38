"""``shallowcnn serve``: the paper's web application for inspecting mammograms.

    serve.py     the command (binds 127.0.0.1 unless told otherwise)
    app.py       the Starlette app: the page, POST /api/scan, GET /api/model, results
    uploads.py   streaming an upload into a private folder, with the size limit
    jobs.py      the bounded scan queue (threads; a flood gets 503) and recent results
    scanner.py   the one door to shallowcnn.scan: checks, the scan, JSON and pictures
    bundled.py   the small phantom-trained model shipped as bundled_model.npz, and the
                 script that regenerates it
    static/      index.html, app.js, style.css (nothing is loaded from elsewhere)

Needs the optional extra ``pip install ".[web]"`` (Starlette, uvicorn, python-multipart);
importing this package alone does not.
"""
