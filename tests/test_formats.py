"""One intensity pipeline for every container: ranks, the network's input, compressed DICOM,
pixel sizes, and the same detections from every way of saving one phantom mammogram."""
from __future__ import annotations

import numpy as np
import pytest

from shallowcnn.constants import PIXEL_MM
from shallowcnn.data.clusters import find_clusters
from shallowcnn.data.dicom import DicomDecoderMissing, read_dicom
from shallowcnn.data.images import UnsupportedFormat, load_image
from shallowcnn.data.intensity import to_network_input
from shallowcnn.data.renditions import min_max_u8, write_renditions


@pytest.fixture(scope="module")
def phantom_image(tiny_phantom):
    """The tiny phantom's image with the most clusters."""
    _, images = tiny_phantom
    return max(images, key=lambda im: len(find_clusters(im.rois)))


@pytest.fixture(scope="module")
def renditions(phantom_image, tmp_path_factory):
    return write_renditions(phantom_image.dicom_path, tmp_path_factory.mktemp("renditions"))


# ---------------------------------------------------------------------------------------
# Ranks and the mapping
# ---------------------------------------------------------------------------------------


def test_network_input_worked_by_hand():
    """Background of 10s and 20s (median 15) on the left, a breast ramp on the right."""
    height, width = 64, 128
    pixels = np.zeros((height, width), dtype=np.int32)
    pixels[:, :64] = 10 + 10 * (np.arange(64)[None, :] % 2)
    pixels[:, 64:] = 1000 + np.arange(64 * 64).reshape(64, 64) % 997
    result = to_network_input(pixels)
    breast = pixels[:, 64:].astype(np.float64)
    hi = np.percentile(breast, 99.9)
    assert result.window == pytest.approx((15.0, hi))
    expected = np.clip(np.rint((pixels - 15.0) / (hi - 15.0) * 255), 0, 255)
    assert np.abs(result.pixels - expected).max() <= 1 and (result.pixels != expected).mean() < 0.01
    assert result.mask[:, 72:].all() and not result.mask[:, :56].any()


def test_affine_maps_give_the_same_network_input_bit_for_bit(phantom_image):
    """Bit depth, a min-max stretch without rounding, slope/intercept, MONOCHROME1 read back:
    increasing affine maps cancel exactly."""
    values = read_dicom(phantom_image.dicom_path).pixels
    reference = to_network_input(values)
    for mapped in (4 * values + 100, values * 0.37 - 5.0):
        again = to_network_input(mapped)
        assert np.array_equal(again.mask, reference.mask)
        assert np.abs(again.pixels.astype(int) - reference.pixels).max() <= 1    # float32 rounding at .5


def test_the_mapping_maps_its_own_output_onto_itself(phantom_image):
    """The 8-bit image the page shows, saved and scanned again, is the same network input."""
    reference = to_network_input(read_dicom(phantom_image.dicom_path).pixels)
    again = to_network_input(reference.pixels)
    np.testing.assert_array_equal(again.pixels, reference.pixels)
    np.testing.assert_array_equal(again.mask, reference.mask)


def test_min_max_8_bit_gives_nearly_the_same_network_input(phantom_image):
    values = read_dicom(phantom_image.dicom_path).pixels
    reference = to_network_input(values)
    eight = to_network_input(min_max_u8(values))
    assert (eight.mask != reference.mask).mean() < 0.005
    inside = reference.mask & eight.mask
    difference = np.abs(eight.pixels.astype(int) - reference.pixels)[inside]
    assert difference.mean() < 1.0 and difference.max() <= 3     # ~180 levels stretched to 256


# ---------------------------------------------------------------------------------------
# Compressed DICOM: lossless syntaxes decode to the uncompressed pixels
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rle", "j2k", "jpegls"])
def test_lossless_compressed_dicom_decodes_to_the_same_pixels(renditions, name):
    from pydicom.pixels import get_encoder
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    syntax = {"rle": RLELossless, "j2k": JPEG2000Lossless, "jpegls": JPEGLSLossless}[name]
    if not get_encoder(syntax).is_available:
        pytest.skip(f"no {name} encoder here (the dicom-compressed extra)")
    import pydicom

    assert pydicom.dcmread(renditions[name], stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_dicom(renditions[name]).pixels, read_dicom(renditions["dicom14"]).pixels)


def test_jpeg_baseline_dicom_decodes_as_pillow_decodes_it(tmp_path, phantom_image):
    """pydicom has no JPEG baseline encoder: Pillow writes the JPEG, pydicom encapsulates it."""
    import io

    import pydicom
    from PIL import Image
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = pydicom.dcmread(phantom_image.dicom_path)
    u8 = min_max_u8(ds.pixel_array)
    buffer = io.BytesIO()
    Image.fromarray(u8, mode="L").save(buffer, format="JPEG", quality=90)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpeg.dcm", enforce_file_format=True)
    decoded = read_dicom(tmp_path / "jpeg.dcm").pixels
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    assert decoded.shape == expected.shape
    assert np.abs(decoded - expected.astype(int)).max() <= 1     # two JPEG decoders' rounding


def lossless_jpeg(pixels: np.ndarray, precision: int) -> bytes:
    """A lossless JPEG (ITU T.81 process 14, selection value 1: predict from the left;
    the first row from the left, the first column from above, the first pixel from
    2^(P-1)), one component, one Huffman table giving each difference category 0 - 16
    a 5-bit code. Written here because pydicom has no encoder for it."""
    pixels = pixels.astype(np.int64)
    predicted = np.empty_like(pixels)
    predicted[0, 0] = 1 << (precision - 1)
    predicted[0, 1:] = pixels[0, :-1]
    predicted[1:, 0] = pixels[:-1, 0]
    predicted[1:, 1:] = pixels[1:, :-1]
    bits, nbits = 0, 0
    out = bytearray()
    for diff in ((pixels - predicted) % 65536).ravel().tolist():
        diff = diff - 65536 if diff > 32768 else diff
        category = abs(diff).bit_length()
        extra = (diff if diff >= 0 else diff + (1 << category) - 1) if 0 < category < 16 else 0
        extra_bits = category if category < 16 else 0
        bits = (bits << (5 + extra_bits)) | (category << extra_bits) | extra
        nbits += 5 + extra_bits
        while nbits >= 8:
            nbits -= 8
            byte = (bits >> nbits) & 0xFF
            out.append(byte)
            if byte == 0xFF:
                out.append(0)              # byte stuffing
        bits &= (1 << nbits) - 1
    if nbits:
        byte = ((bits << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xFF   # pad with 1 bits
        out += bytes([byte, 0]) if byte == 0xFF else bytes([byte])

    def segment(marker, payload):
        return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload

    height, width = pixels.shape
    sof3 = bytes([precision]) + height.to_bytes(2, "big") + width.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    dht = bytes([0x00]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sos = bytes([1, 1, 0x00, 1, 0, 0])        # one component, table 0, Ss = predictor 1, Se 0, Pt 0
    return (b"\xff\xd8" + segment(0xC3, sof3) + segment(0xC4, dht) + segment(0xDA, sos) + bytes(out)
            + b"\xff\xd9")


def test_jpeg_lossless_dicom_decodes_to_the_same_pixels(tmp_path, phantom_image):
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLosslessSV1

    if not get_decoder(JPEGLosslessSV1).is_available:
        pytest.skip("no JPEG lossless decoder here (the dicom-compressed extra)")
    ds = pydicom.dcmread(phantom_image.dicom_path)
    crop = ds.pixel_array[100:260, 80:300]               # 160 x 220: the encoder above is plain Python
    ds.Rows, ds.Columns = crop.shape
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    ds.PixelData = encapsulate([lossless_jpeg(crop, int(ds.BitsStored))])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "lossless.dcm", enforce_file_format=True)
    np.testing.assert_array_equal(read_dicom(tmp_path / "lossless.dcm").pixels, crop)


def test_missing_decoder_names_the_extra(renditions, monkeypatch):
    import pydicom.pixels

    class Unavailable:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda syntax: Unavailable())
    with pytest.raises(DicomDecoderMissing, match=r'shallowcnn\[dicom-compressed\]'):
        read_dicom(renditions["rle"])
    with pytest.raises(UnsupportedFormat, match="RLE Lossless"):
        load_image(renditions["rle"])


# ---------------------------------------------------------------------------------------
# Pixel size: where it came from
# ---------------------------------------------------------------------------------------


def _dicom_with(tmp_path, source, spacing):
    import pydicom

    ds = pydicom.dcmread(source)
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds:
            delattr(ds, keyword)
    for keyword, value in spacing.items():
        setattr(ds, keyword, value)
    path = tmp_path / f"{'_'.join(spacing) or 'none'}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("spacing, expected, source", [
    ({"PixelSpacing": [0.07, 0.07], "ImagerPixelSpacing": [0.085, 0.085]}, (0.07, 0.07), "PixelSpacing"),
    ({"ImagerPixelSpacing": [0.085, 0.085]}, (0.085, 0.085), "ImagerPixelSpacing"),
    ({}, (PIXEL_MM, PIXEL_MM), "assumed"),
])
def test_pixel_size_comes_from_pixel_spacing_then_imager_pixel_spacing(tmp_path, phantom_image, spacing,
                                                                       expected, source):
    path = _dicom_with(tmp_path, phantom_image.dicom_path, spacing)
    image = load_image(path)
    assert image.spacing_mm == expected and image.spacing_source == source
    assert (image.pixel_size_note is not None) == (source == "assumed")
    assert image.scale == pytest.approx(PIXEL_MM / expected[0], rel=0.01)   # original px per scanned px
    given = load_image(path, pixel_size_mm=0.05)
    assert given.spacing_mm == (0.05, 0.05) and given.spacing_source == "option" and given.pixel_size_note is None


def test_png_pixel_size_is_assumed_and_said(renditions):
    image = load_image(renditions["png16"])
    assert image.spacing_source == "assumed" and "--pixel-size" in image.pixel_size_note
    assert image.file_format == "PNG" and image.original_size == image.pixels.shape[::-1]


# ---------------------------------------------------------------------------------------
# The bar: the same detections from every container
# ---------------------------------------------------------------------------------------


def test_every_container_gives_the_same_detections(renditions):
    """14-bit DICOM, MONOCHROME1 (ImagerPixelSpacing only), JPEG 2000 (no pixel size), RLE,
    JPEG-LS, 16-bit PNG and TIFF, 8-bit min-max PNG and JPEG 95, scanned with the bundled
    model (``--pixel-size 0.07`` where the file has none): the same windows scanned, every
    window's probability the same (within 1e-6) for every lossless container, and within 0.15
    for the two 8-bit renditions (min-max PNG, JPEG 95), whose requantisation and 8 x 8 blocks
    alter faint calcifications' contrast (the bundled model's windows move by up to 0.06 and
    0.11 there, the 60-patient model before it by 0.04 and 0.08), and each
    of the DICOM's detections has a counterpart within 1.4 mm and 0.1 in probability (measured:
    the same pixel and 0.02), and no rendition adds one."""
    from shallowcnn.scan import scan_image
    from shallowcnn.web.bundled import load_bundled_model

    model = load_bundled_model()
    results = {}
    for name, path in renditions.items():
        if name == "png8_window":     # the clipped rendering: see bench_formats.py
            continue
        has_size = name in ("dicom14", "monochrome1", "rle", "jpegls")
        results[name] = scan_image(model, path, pixel_size_mm=None if has_size else PIXEL_MM)
    reference = results["dicom14"].detections
    assert reference, "the bundled model must find something on this phantom image for the test to mean anything"
    scanned = np.isfinite(results["dicom14"].prob_map)
    for name, result in results.items():
        # the same windows scanned (the same mask), and every window's probability close
        np.testing.assert_array_equal(np.isfinite(result.prob_map), scanned, err_msg=name)
        tolerance = 0.15 if name in ("png8_minmax", "jpeg95_minmax") else 1e-6
        assert np.abs(result.prob_map[scanned] - results["dicom14"].prob_map[scanned]).max() <= tolerance, name
        assert len(result.detections) == len(reference), name
        for ref in reference:
            mm = min(np.hypot(d.row - ref.row, d.col - ref.col) * PIXEL_MM for d in result.detections)
            near = min(result.detections, key=lambda d: np.hypot(d.row - ref.row, d.col - ref.col))
            assert mm <= 1.4 and abs(near.probability - ref.probability) <= 0.1, (name, mm, near, ref)


# ---------------------------------------------------------------------------------------
# The pixel size's source in detections.json, scan's output and the page's report
# ---------------------------------------------------------------------------------------


def test_scan_and_the_page_say_the_pixel_size_was_assumed(renditions, tmp_path, capsys):
    import json

    from shallowcnn.cli import main
    from shallowcnn.web.bundled import BUNDLED_MODEL_PATH, load_bundled_model
    from shallowcnn.web.scanner import scan_upload

    out = tmp_path / "scan"
    assert main(["scan", str(BUNDLED_MODEL_PATH), str(renditions["png16"]), str(renditions["dicom14"]),
                 "-o", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "png16.png: no pixel size in the file: 0.07 mm" in err and "--pixel-size" in err
    assert "dicom14" not in err
    png = json.loads((out / "png16.detections.json").read_text())
    dicom = json.loads((out / "dicom14.detections.json").read_text())
    assert png["pixel_size_source"] == "assumed" and "--pixel-size" in png["pixel_size_note"]
    assert dicom["pixel_size_source"] == "PixelSpacing" and dicom["pixel_size_note"] is None
    upload = tmp_path / "upload-x.bin"
    upload.write_bytes(renditions["monochrome1"].read_bytes())
    image = scan_upload(load_bundled_model(), upload, "mono.dcm", overlay=False).report["image"]
    assert image["pixel_size_source"] == "ImagerPixelSpacing" and image["pixel_size_note"] is None
    assert (image["width"], image["height"]) == load_image(renditions["monochrome1"]).original_size


def test_an_upload_without_its_decoder_is_refused_as_unsupported(renditions, tmp_path, monkeypatch):
    import pydicom.pixels

    from shallowcnn.web.bundled import load_bundled_model
    from shallowcnn.web.scanner import UploadRejected, scan_upload

    class Unavailable:
        is_available = False

    monkeypatch.setattr(pydicom.pixels, "get_decoder", lambda syntax: Unavailable())
    upload = tmp_path / "upload-y.bin"
    upload.write_bytes(renditions["rle"].read_bytes())
    with pytest.raises(UploadRejected) as refused:
        scan_upload(load_bundled_model(), upload, "rle.dcm")
    assert refused.value.status == 415 and "rle.dcm" in refused.value.message
    assert "dicom-compressed" in refused.value.message and str(upload) not in refused.value.message


@pytest.mark.parametrize("name", ["dicom14", "png16"])
def test_an_upload_is_parsed_once(renditions, tmp_path, monkeypatch, name):
    """One reading path: pydicom parses a DICOM upload once, Pillow opens an image once."""
    import pydicom
    from PIL import Image

    from shallowcnn.web.bundled import load_bundled_model
    from shallowcnn.web.scanner import scan_upload

    calls = {"dcmread": 0, "open": 0}
    real_dcmread, real_open = pydicom.dcmread, Image.open

    def counting_dcmread(*args, **kwargs):
        calls["dcmread"] += 1
        return real_dcmread(*args, **kwargs)

    def counting_open(*args, **kwargs):
        calls["open"] += 1
        return real_open(*args, **kwargs)

    monkeypatch.setattr(pydicom, "dcmread", counting_dcmread)
    monkeypatch.setattr(Image, "open", counting_open)
    upload = tmp_path / "upload-z.bin"
    upload.write_bytes(renditions[name].read_bytes())
    report = scan_upload(load_bundled_model(), upload, renditions[name].name, overlay=False).report
    assert report["file"]["format"] == ("DICOM" if name == "dicom14" else "PNG")
    assert calls == ({"dcmread": 1, "open": 0} if name == "dicom14" else {"dcmread": 0, "open": 1})
