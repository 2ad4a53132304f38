"""Helpers shared by the tests/test_bad_inputs*.py files (one file per surface)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import pydicom
from pydicom import config as pydicom_config

from shallowcnn.cli import main


def run_cli(capsys, argv) -> tuple:
    """``(status, stdout, stderr)`` of ``shallowcnn ARGV`` run in-process; argparse's exit
    (status 2 for a bad option) counts as a status. Fails on any traceback."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    assert "Traceback" not in err and "Traceback" not in out, err
    return status, out, err


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height 8-bit grey pixels; its data are a few bytes
    (a decompression bomb's header; Pillow reads only the header on open)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def edit_dicom(path: Path, **attributes) -> None:
    """Set header attributes of a DICOM, writing values pydicom would refuse to write."""
    ds = pydicom.dcmread(path)
    mode = pydicom_config.settings.writing_validation_mode
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    try:
        for key, value in attributes.items():
            setattr(ds, key, value)
        ds.save_as(path)
    finally:
        pydicom_config.settings.writing_validation_mode = mode
