"""Warnings of the third-party readers (pydicom, Pillow) reach the user naming the file.

A DICOM whose pixel data carries 4 bytes more than its Rows x Columns x 2 (padding, as
some writers leave) is still readable: pydicom warns about it, naming a line of its own source.
The package issues that warning again as a ReaderWarning that starts with the file's
path, and the command line prints it as ``shallowcnn COMMAND: warning: ...``.
"""
from __future__ import annotations

import warnings

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from shallowcnn.cli import main
from shallowcnn.data.dicom import read_dicom
from shallowcnn.data.problems import ReaderWarning
from shallowcnn.web.bundled import BUNDLED_MODEL_PATH

def write_padded_dicom(path, size=200):
    rng = np.random.default_rng(0)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 14, 13, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    pixels = rng.integers(0, 1 << 14, (size, size), dtype=np.uint16)
    ds.PixelData = pixels.tobytes() + bytes(4)
    ds.save_as(path, enforce_file_format=True)
    return path, pixels


def test_a_pydicom_warning_is_issued_again_naming_the_file(tmp_path):
    path, pixels = write_padded_dicom(tmp_path / "padded.dcm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = read_dicom(path)
    named = [w for w in caught if issubclass(w.category, ReaderWarning)]
    assert len(named) == 1                                    # once, however often pydicom said it
    assert str(named[0].message).startswith(f"{path}: ")
    assert "4 bytes of excess padding" in str(named[0].message)
    assert not [w for w in caught if not issubclass(w.category, ReaderWarning)]   # nothing raw
    np.testing.assert_array_equal(image.pixels, pixels)      # and the file is still read


def test_the_command_line_prints_it_as_a_warning_line(tmp_path, capsys):
    path, _ = write_padded_dicom(tmp_path / "padded.dcm", size=300)
    main(["scan", str(BUNDLED_MODEL_PATH), str(path), "-o", str(tmp_path / "out"), "--backend", "numpy",
          "--quiet"])
    err = capsys.readouterr().err
    assert f"shallowcnn scan: warning: {path}: The pixel data is 180004 bytes long" in err
    assert "UserWarning" not in err and "Traceback" not in err
