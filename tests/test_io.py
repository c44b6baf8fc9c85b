"""Tests for fetalbio.io: synthetic images and DICOM files written to tmp_path (no real scans)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from _dicom import US_IMAGE_STORAGE, US_MULTIFRAME_STORAGE, make_dicom, us_region  # noqa: F401
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from fetalbio.io import SCAN_SUFFIXES, Scan, ScanError, find_scans, read_pixel_csv, read_scan

# ---- helpers -------------------------------------------------------------------------------------


def ramp(h: int = 48, w: int = 64, dtype: Any = np.uint8, top: int = 255) -> np.ndarray:
    """A non-blank (h, w) test pattern with values 0..top."""
    yy, xx = np.mgrid[0:h, 0:w]
    return ((xx * 7 + yy * 13) % (top + 1)).astype(dtype)


def write_image(path: Path, img: np.ndarray) -> Path:
    ok, buf = cv2.imencode(path.suffix, img)
    assert ok
    buf.tofile(path)
    return path


def assert_one_line_error(err: pytest.ExceptionInfo[ScanError], path: Path, reason: str) -> None:
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: ")
    assert path.name in text
    assert reason in text
    assert err.value.path == path


# ---- raster round trips --------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tif"])
def test_grey_8bit_round_trip(tmp_path: Path, suffix: str) -> None:
    img = ramp()
    scan = read_scan(write_image(tmp_path / f"scan{suffix}", img))
    assert isinstance(scan, Scan)
    assert scan.pixels.dtype == np.uint8
    assert (scan.height, scan.width) == (48, 64)
    np.testing.assert_array_equal(scan.pixels, img)
    assert scan.spacing_mm is None and scan.spacing_source == "none" and scan.frame == 0
    assert scan.source == tmp_path / f"scan{suffix}"


@pytest.mark.parametrize("suffix", [".png", ".tif", ".tiff"])
def test_grey_16bit_round_trip_keeps_uint16(tmp_path: Path, suffix: str) -> None:
    img = ramp(dtype=np.uint16, top=60000) + 1000
    scan = read_scan(write_image(tmp_path / f"scan16{suffix}", img))
    assert scan.pixels.dtype == np.uint16
    np.testing.assert_array_equal(scan.pixels, img)


def test_rgb_png_converted_to_grey(tmp_path: Path) -> None:
    grey = ramp()
    bgr = np.dstack([grey, grey, grey])
    # pure blue in OpenCV's BGR order, a block too large to be an overlay (so converted as it is)
    bgr[:8] = (255, 0, 0)
    scan = read_scan(write_image(tmp_path / "rgb.png", bgr))
    assert scan.pixels.shape == (48, 64) and scan.pixels.dtype == np.uint8
    np.testing.assert_array_equal(scan.pixels[8:], grey[8:])
    assert (scan.pixels[:8] == round(0.114 * 255)).all()  # luma weight of blue: proves BGR handled as BGR


def test_rgba_png_drops_alpha(tmp_path: Path) -> None:
    grey = ramp()
    bgra = np.dstack([grey, grey, grey, np.full_like(grey, 7)])
    scan = read_scan(write_image(tmp_path / "rgba.png", bgra))
    np.testing.assert_array_equal(scan.pixels, grey)


def test_rgb_16bit_png(tmp_path: Path) -> None:
    grey = ramp(dtype=np.uint16, top=40000)
    scan = read_scan(write_image(tmp_path / "rgb16.png", np.dstack([grey, grey, grey])))
    assert scan.pixels.dtype == np.uint16
    np.testing.assert_array_equal(scan.pixels, grey)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg"])
def test_jpeg_lossy_round_trip(tmp_path: Path, suffix: str) -> None:
    yy, xx = np.mgrid[0:64, 0:80]
    img = (xx * 3).astype(np.uint8)  # smooth ramp so JPEG loss stays small
    scan = read_scan(write_image(tmp_path / f"scan{suffix}", img))
    assert scan.pixels.shape == (64, 80) and scan.pixels.dtype == np.uint8
    assert np.abs(scan.pixels.astype(int) - img).max() <= 4


def test_float_tiff_rescaled_to_uint16(tmp_path: Path) -> None:
    img = ramp().astype(np.float32) / 255.0
    scan = read_scan(write_image(tmp_path / "float.tif", img))
    assert scan.pixels.dtype == np.uint16
    assert scan.pixels.min() == 0 and scan.pixels.max() == 65535
    np.testing.assert_array_equal(
        np.argsort(scan.pixels, axis=None, kind="stable"), np.argsort(img, axis=None, kind="stable")
    )


def test_float_tiff_with_nan_rejected(tmp_path: Path) -> None:
    img = ramp().astype(np.float32)
    img[3, 3] = np.nan
    path = write_image(tmp_path / "nan.tif", img)
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "NaN")


def test_non_ascii_path(tmp_path: Path) -> None:
    folder = tmp_path / "fötus_ñ_胎儿"
    folder.mkdir()
    scan = read_scan(write_image(folder / "échographie.png", ramp()))
    assert scan.width == 64


def test_dicom_magic_wins_over_suffix(tmp_path: Path) -> None:
    img = ramp()
    path = make_dicom(tmp_path / "looks_like.png", img, PixelSpacing=[0.3, 0.3])
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, img)
    assert scan.spacing_source == "dicom-pixelspacing"


def test_frame_other_than_zero_rejected_for_images(tmp_path: Path) -> None:
    path = write_image(tmp_path / "scan.png", ramp())
    with pytest.raises(ScanError) as err:
        read_scan(path, frame=1)
    assert_one_line_error(err, path, "frame 1 out of range")


# ---- spacing precedence --------------------------------------------------------------------------


def test_spacing_precedence_cli_then_csv_then_dicom(tmp_path: Path) -> None:
    regions = Sequence([us_region(0.01, 0.012)])
    path = make_dicom(tmp_path / "p.dcm", ramp(), SequenceOfUltrasoundRegions=regions, PixelSpacing=[0.5] * 2)
    table = {"p.dcm": 0.25}
    assert read_scan(path, pixel_size_mm=0.2, pixel_csv=table).spacing_mm == (0.2, 0.2)
    scan = read_scan(path, pixel_size_mm=(0.3, 0.4), pixel_csv=table)
    assert (scan.spacing_mm, scan.spacing_source) == ((0.3, 0.4), "cli")
    scan = read_scan(path, pixel_csv=table)
    assert (scan.spacing_mm, scan.spacing_source) == ((0.25, 0.25), "csv")
    scan = read_scan(path, pixel_csv={"other.dcm": 0.25})
    assert scan.spacing_source == "dicom-region"
    assert scan.spacing_mm == pytest.approx((0.1, 0.12))


def test_csv_spacing_for_png_by_basename(tmp_path: Path) -> None:
    path = write_image(tmp_path / "000_HC.png", ramp())
    scan = read_scan(str(path), pixel_csv={"000_HC.png": 0.0691358041432})
    assert scan.spacing_mm == (0.0691358041432, 0.0691358041432)
    assert scan.spacing_source == "csv"
    assert read_scan(path, pixel_csv={"001_HC.png": 0.1}).spacing_source == "none"


@pytest.mark.parametrize(
    "bad", [0.0, -0.1, float("nan"), float("inf"), (0.1, 0.0), (0.1,), "abc", 1e-5, 0.004, (0.1, 0.001), 5.1]
)
def test_bad_cli_spacing_rejected(tmp_path: Path, bad: Any) -> None:
    path = write_image(tmp_path / "scan.png", ramp())
    with pytest.raises(ScanError) as err:
        read_scan(path, pixel_size_mm=bad)
    assert_one_line_error(err, path, "pixel size from the command line")


def test_pixel_sizes_at_the_limits_are_taken(tmp_path: Path) -> None:
    path = write_image(tmp_path / "scan.png", ramp())
    for ok in (0.005, 0.04, 0.5, 5.0):
        assert read_scan(path, pixel_size_mm=ok).spacing_mm == (ok, ok)


def test_bad_csv_spacing_rejected(tmp_path: Path) -> None:
    path = write_image(tmp_path / "scan.png", ramp())
    with pytest.raises(ScanError) as err:
        read_scan(path, pixel_csv={"scan.png": -1.0})
    assert_one_line_error(err, path, "must be finite and positive")


# ---- pixel-size CSV ------------------------------------------------------------------------------


def test_pixel_csv_crlf_and_extra_columns(tmp_path: Path) -> None:
    path = tmp_path / "training_set_pixel_size_and_HC.csv"
    path.write_bytes(
        b"filename,pixel size(mm),head circumference (mm)\r\n"
        b"000_HC.png,0.0691358041432,44.3\r\n"
        b"\r\n"
        b"sub\\001_HC.png,0.0891632372,56.81\r\n"
    )
    assert read_pixel_csv(path) == {"000_HC.png": 0.0691358041432, "001_HC.png": 0.0891632372}


def test_pixel_csv_two_columns_bom_and_header_variants(tmp_path: Path) -> None:
    path = tmp_path / "test_set_pixel_size.csv"
    path.write_text("\ufeffFilename, Pixel size (mm)\n000_HC.png,0.1\n", encoding="utf-8")
    assert read_pixel_csv(path) == {"000_HC.png": 0.1}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("filename,pixel size(mm)\n000_HC.png,abc\n", "row 2 (000_HC.png): pixel size 'abc' is not a number"),
        ("filename,pixel size(mm)\n000_HC.png,0.1\n001_HC.png,0\n", "row 3 (001_HC.png)"),
        ("filename,pixel size(mm)\n000_HC.png,-0.1\n", "must be positive"),
        ("filename,pixel size(mm)\n000_HC.png,nan\n", "must be positive"),
        ("filename,pixel size(mm)\n000_HC.png\n", "row 2: expected at least 2 columns"),
        ("filename,pixel size(mm)\n,0.1\n", "row 2: empty filename"),
        ("filename,pixel size(mm)\na.png,0.1\na.png,0.2\n", "listed twice"),
        ("filename,hc\n000_HC.png,0.1\n", "missing column 'pixel size(mm)'"),
        ("name,pixel size(mm)\n000_HC.png,0.1\n", "missing column 'filename'"),
        ("", "empty CSV file"),
    ],
)
def test_pixel_csv_bad_rows(tmp_path: Path, body: str, reason: str) -> None:
    path = tmp_path / "sizes.csv"
    path.write_text(body)
    with pytest.raises(ScanError) as err:
        read_pixel_csv(path)
    assert_one_line_error(err, path, reason)


def test_pixel_csv_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(ScanError) as err:
        read_pixel_csv(path)
    assert_one_line_error(err, path, "does not exist")


# ---- DICOM ---------------------------------------------------------------------------------------


def test_dicom_mono2_with_ultrasound_region(tmp_path: Path) -> None:
    img = ramp()
    path = make_dicom(
        tmp_path / "region.dcm", img, SequenceOfUltrasoundRegions=Sequence([us_region(0.01, 0.012)])
    )
    scan = read_scan(path)
    assert scan.pixels.dtype == np.uint8
    np.testing.assert_array_equal(scan.pixels, img)
    assert scan.spacing_source == "dicom-region"
    assert scan.spacing_mm == pytest.approx((0.1, 0.12))


def test_dicom_region_prefers_largest_2d_tissue_region_in_cm(tmp_path: Path) -> None:
    regions = Sequence(
        [
            us_region(0.05, 0.05, units=(4, 7)),  # Doppler strip: seconds x cm/s, not a length
            us_region(0.02, 0.02, box=(0, 0, 20, 20)),  # small 2-D region
            us_region(0.03, 0.03, box=(0, 0, 63, 47), spatial_format=2),  # big, but M-mode
            us_region(0.01, 0.012, box=(10, 5, 60, 45)),  # largest 2-D tissue region in cm
        ]
    )
    scan = read_scan(make_dicom(tmp_path / "multi.dcm", ramp(), SequenceOfUltrasoundRegions=regions))
    assert scan.spacing_mm == pytest.approx((0.1, 0.12))


def test_dicom_region_falls_back_to_first_cm_region(tmp_path: Path) -> None:
    regions = Sequence(
        [
            us_region(0.05, 0.05, units=(0, 0)),
            us_region(0.02, 0.03, spatial_format=2),
            us_region(0.04, 0.04, spatial_format=3),
        ]
    )
    scan = read_scan(make_dicom(tmp_path / "mmode.dcm", ramp(), SequenceOfUltrasoundRegions=regions))
    assert scan.spacing_mm == pytest.approx((0.2, 0.3))


def test_dicom_region_not_in_cm_falls_through_to_pixelspacing(tmp_path: Path) -> None:
    regions = Sequence([us_region(0.05, 0.05, units=(0, 0))])
    scan = read_scan(
        make_dicom(tmp_path / "r.dcm", ramp(), SequenceOfUltrasoundRegions=regions, PixelSpacing=[0.2, 0.15])
    )
    assert scan.spacing_source == "dicom-pixelspacing"


def test_dicom_bad_region_spacing_rejected(tmp_path: Path) -> None:
    regions = Sequence([us_region(0.0, 0.01)])
    path = make_dicom(tmp_path / "zero.dcm", ramp(), SequenceOfUltrasoundRegions=regions)
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "must be finite and positive")


def test_dicom_pixelspacing_is_row_then_column(tmp_path: Path) -> None:
    scan = read_scan(make_dicom(tmp_path / "ps.dcm", ramp(), PixelSpacing=[0.2, 0.15]))
    assert scan.spacing_source == "dicom-pixelspacing"
    assert scan.spacing_mm == pytest.approx((0.15, 0.2))


def test_dicom_imagerpixelspacing(tmp_path: Path) -> None:
    scan = read_scan(make_dicom(tmp_path / "ips.dcm", ramp(), ImagerPixelSpacing=[0.3, 0.25]))
    assert scan.spacing_source == "dicom-imagerpixelspacing"
    assert scan.spacing_mm == pytest.approx((0.25, 0.3))


def test_dicom_pixelspacing_beats_imagerpixelspacing(tmp_path: Path) -> None:
    scan = read_scan(
        make_dicom(tmp_path / "both.dcm", ramp(), PixelSpacing=[0.2, 0.15], ImagerPixelSpacing=[0.3, 0.25])
    )
    assert scan.spacing_source == "dicom-pixelspacing"


def test_dicom_without_spacing(tmp_path: Path) -> None:
    scan = read_scan(make_dicom(tmp_path / "none.dcm", ramp()))
    assert scan.spacing_mm is None and scan.spacing_source == "none"


def test_dicom_monochrome1_inverted(tmp_path: Path) -> None:
    img = ramp()
    scan = read_scan(make_dicom(tmp_path / "m1.dcm", img, photometric="MONOCHROME1"))
    np.testing.assert_array_equal(scan.pixels, 255 - img)


def test_dicom_monochrome1_12bit_inverted_within_bits_stored(tmp_path: Path) -> None:
    img = ramp(dtype=np.uint16, top=4095)
    scan = read_scan(make_dicom(tmp_path / "m1_12.dcm", img, photometric="MONOCHROME1", bits_stored=12))
    assert scan.pixels.dtype == np.uint16
    np.testing.assert_array_equal(scan.pixels, 4095 - img)


def test_dicom_rgb_to_grey(tmp_path: Path) -> None:
    grey = ramp()
    rgb = np.dstack([grey, grey, grey])
    rgb[:8] = (255, 0, 0)  # pure red in DICOM's RGB order, too large to be an overlay
    scan = read_scan(make_dicom(tmp_path / "rgb.dcm", rgb, photometric="RGB"))
    assert scan.pixels.shape == (48, 64)
    np.testing.assert_array_equal(scan.pixels[8:], grey[8:])
    assert (scan.pixels[:8] == round(0.299 * 255)).all()


def test_dicom_caliper_overlay_is_filled_in(tmp_path: Path) -> None:
    """A secondary capture's yellow caliper cross is not echo: filled in from the ramp around it."""
    grey = np.tile(np.arange(64, dtype=np.uint8) * 3, (48, 1))  # smooth, so filling in can recover it
    rgb = np.dstack([grey, grey, grey])
    rgb[20:23, 30:33] = (255, 255, 0)
    scan = read_scan(make_dicom(tmp_path / "sc.dcm", rgb, photometric="RGB"))
    assert np.abs(scan.pixels[20:23, 30:33].astype(int) - grey[20:23, 30:33]).max() <= 8
    np.testing.assert_array_equal(scan.pixels[:20], grey[:20])


def test_dicom_ybr_full_to_grey(tmp_path: Path) -> None:
    grey = ramp()
    ybr = convert_color_space(np.dstack([grey, grey, grey]), "RGB", "YBR_FULL")
    scan = read_scan(make_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL"))
    assert np.abs(scan.pixels.astype(int) - grey).max() <= 1


def test_dicom_palette_colour(tmp_path: Path) -> None:
    idx = ramp()
    lut = (np.arange(256, dtype=np.uint16) * 257)[::-1].copy()  # inverted 16-bit grey palette
    elements: dict[str, Any] = {}
    for colour in ("Red", "Green", "Blue"):
        elements[f"{colour}PaletteColorLookupTableDescriptor"] = [256, 0, 16]
        elements[f"{colour}PaletteColorLookupTableData"] = lut.tobytes()
    scan = read_scan(make_dicom(tmp_path / "pal.dcm", idx, photometric="PALETTE COLOR", **elements))
    assert scan.pixels.dtype == np.uint16
    np.testing.assert_array_equal(scan.pixels, lut[idx])


def test_dicom_multiframe_picks_frame(tmp_path: Path) -> None:
    frames = np.stack([ramp() // 3 + 10 * k for k in range(3)])
    path = make_dicom(tmp_path / "cine.dcm", frames, frames=3, PixelSpacing=[0.2, 0.15])
    scan = read_scan(path, frame=2)
    assert scan.frame == 2 and scan.pixels.shape == (48, 64)
    np.testing.assert_array_equal(scan.pixels, frames[2])
    np.testing.assert_array_equal(read_scan(path).pixels, frames[0])
    with pytest.raises(ScanError) as err:
        read_scan(path, frame=3)
    assert_one_line_error(err, path, "frame 3 out of range (DICOM has 3 frames)")


def test_dicom_multiframe_rgb(tmp_path: Path) -> None:
    grey = np.stack([ramp(), 255 - ramp()])
    rgb = np.repeat(grey[..., None], 3, axis=3)
    scan = read_scan(make_dicom(tmp_path / "cine_rgb.dcm", rgb, photometric="RGB", frames=2), frame=1)
    np.testing.assert_array_equal(scan.pixels, grey[1])


def test_dicom_16bit_kept(tmp_path: Path) -> None:
    img = ramp(dtype=np.uint16, top=4095)
    scan = read_scan(make_dicom(tmp_path / "d16.dcm", img, bits_stored=12))
    assert scan.pixels.dtype == np.uint16
    np.testing.assert_array_equal(scan.pixels, img)


def test_dicom_signed_16bit_shifted_to_unsigned(tmp_path: Path) -> None:
    img = ramp(dtype=np.int16, top=2000) - 1000
    scan = read_scan(make_dicom(tmp_path / "s16.dcm", img, signed=True))
    assert scan.pixels.dtype == np.uint16
    np.testing.assert_array_equal(scan.pixels, img.astype(np.int32) + 32768)


def test_dicom_32bit_rescaled_to_uint16(tmp_path: Path) -> None:
    img = ramp(dtype=np.uint32, top=255) * 1_000_000
    scan = read_scan(make_dicom(tmp_path / "d32.dcm", img))
    assert scan.pixels.dtype == np.uint16
    assert scan.pixels.max() == 65535 and scan.pixels.min() == 0


def test_dicom_without_preamble(tmp_path: Path) -> None:
    img = ramp()
    ds = dcmread(make_dicom(tmp_path / "full.dcm", img, PixelSpacing=[0.2, 0.1]))
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / "bare.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    scan = read_scan(path)
    np.testing.assert_array_equal(scan.pixels, img)
    assert scan.spacing_mm == pytest.approx((0.1, 0.2))


def test_dicom_enhanced_pixel_measures(tmp_path: Path) -> None:
    measures = Dataset()
    measures.PixelSpacing = [0.4, 0.3]
    group = Dataset()
    group.PixelMeasuresSequence = Sequence([measures])
    frames = np.stack([ramp(), 255 - ramp()])
    path = make_dicom(
        tmp_path / "enh.dcm", frames, frames=2, SharedFunctionalGroupsSequence=Sequence([group])
    )
    scan = read_scan(path, frame=1)
    assert (scan.spacing_mm, scan.spacing_source) == (pytest.approx((0.3, 0.4)), "dicom-pixelspacing")


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    path = tmp_path / "nopix.dcm"
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = US_IMAGE_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "DICOM without pixel data")


def test_dicom_truncated_pixel_data(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "short.dcm", ramp())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "")


def test_garbage_named_dcm(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_text("this is not a DICOM file\nat all\n")
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "not a readable DICOM file")


# ---- bad inputs ----------------------------------------------------------------------------------


def test_corrupt_png(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "cannot decode")


def test_truncated_png(tmp_path: Path) -> None:
    path = write_image(tmp_path / "trunc.png", ramp(200, 200))
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "PNG without its end chunk (cut short)")
    # and libpng's own complaint never reaches the terminal (it writes to fd 2 itself)
    import subprocess
    import sys

    code = f"from fetalbio.io import read_scan\ntry:\n    read_scan({str(path)!r})\nexcept Exception:\n    0"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "libpng" not in out.stderr, out.stderr


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("filename,pixel size(mm)\n")
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "not an image or cannot decode")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "empty file (0 bytes)")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.png"
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "does not exist")


def test_directory(tmp_path: Path) -> None:
    path = tmp_path / "folder.png"
    path.mkdir()
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "is a directory")


def test_tiny_image(tmp_path: Path) -> None:
    path = write_image(tmp_path / "tiny.png", ramp(12, 10))
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "too small: 10x12 px")
    assert read_scan(path, min_size_px=10).width == 10


def test_tiny_dicom(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "tiny.dcm", ramp(8, 40))
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "too small: 40x8 px")


@pytest.mark.parametrize("value", [0, 200])
def test_blank_image(tmp_path: Path, value: int) -> None:
    path = write_image(tmp_path / "blank.png", np.full((40, 40), value, np.uint8))
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, f"blank image (all pixels = {value})")


def test_blank_dicom(tmp_path: Path) -> None:
    path = make_dicom(tmp_path / "blank.dcm", np.zeros((40, 40), np.uint8))
    with pytest.raises(ScanError) as err:
        read_scan(path)
    assert_one_line_error(err, path, "blank image (all pixels = 0)")


def test_scan_error_is_one_line_and_picklable(tmp_path: Path) -> None:
    err = ScanError(tmp_path / "a.png", "first line\nsecond line")
    assert str(err) == f"{tmp_path / 'a.png'}: first line second line"
    copy = pickle.loads(pickle.dumps(err))
    assert isinstance(copy, ScanError) and str(copy) == str(err) and copy.reason == err.reason


def test_scan_rejects_bad_pixels() -> None:
    with pytest.raises(ValueError):
        Scan(pixels=np.zeros((4, 4, 3), np.uint8), spacing_mm=None, source=Path("x"), spacing_source="none")


# ---- find_scans ----------------------------------------------------------------------------------


def test_find_scans(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "sub" / "deeper").mkdir(parents=True)
    (data / ".cache").mkdir()
    for rel in [
        "b.png",
        "a.PNG",
        "a_Annotation.png",
        "c_annotation.PNG",
        "notes.txt",
        ".hidden.png",
        "sub/z.dcm",
        "sub/y.JPG",
        "sub/deeper/x.tiff",
        "sub/deeper/w.bmp",
        ".cache/v.png",
        "sub/u.DICOM",
        "sub/t.jpeg",
        "sub/s.tif",
    ]:
        (data / rel).write_bytes(b"x")
    odd = tmp_path / "explicit.weird"
    odd.write_bytes(b"x")
    missing = tmp_path / "missing"

    scans, errors = find_scans([data, str(odd), missing, data / "b.png", data / "a_Annotation.png"])
    rel = [p.relative_to(tmp_path).as_posix() for p in scans]
    assert rel == [
        "data/a.PNG",
        "data/b.png",
        "data/sub/s.tif",
        "data/sub/t.jpeg",
        "data/sub/u.DICOM",
        "data/sub/y.JPG",
        "data/sub/z.dcm",
        "data/sub/deeper/w.bmp",
        "data/sub/deeper/x.tiff",
        "explicit.weird",
    ]
    assert len(errors) == 1
    assert errors[0].path == missing and str(errors[0]) == f"{missing}: does not exist"
    assert find_scans([data]) == find_scans([data])  # deterministic


def test_find_scans_single_path_and_empty(tmp_path: Path) -> None:
    write_image(tmp_path / "one.png", ramp())
    assert find_scans(tmp_path) == ([tmp_path / "one.png"], [])  # type: ignore[arg-type]
    assert find_scans([]) == ([], [])


def test_scan_suffixes() -> None:
    assert {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".dcm", ".dicom"} == set(SCAN_SUFFIXES)


def test_a_webp_scan_in_a_folder_is_found_and_read(tmp_path: Path) -> None:
    """A scan saved from a browser as WebP (lossless here) is a scan like a PNG, in a folder too."""
    img = ramp(120, 160)
    ok, buf = cv2.imencode(".webp", img, [cv2.IMWRITE_WEBP_QUALITY, 101])  # >100: lossless
    assert ok
    (tmp_path / "scan.webp").write_bytes(buf.tobytes())
    scans, errors = find_scans([tmp_path])
    assert scans == [tmp_path / "scan.webp"] and not errors
    assert np.array_equal(read_scan(scans[0], pixel_size_mm=0.1).pixels, img)


@pytest.mark.parametrize(
    "name, params",
    [("a.tif", []), ("a16.tif", []), ("a.webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
     ("b.webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), ("a.png", []), ("a.jpg", []), ("a.bmp", [])],
)  # fmt: skip
def test_raster_size_reads_every_format_header_without_decoding(tmp_path, name, params):
    from fetalbio.io import raster_size

    img = np.full((123, 457), 77, np.uint16 if "16" in name else np.uint8)
    path = tmp_path / name
    assert cv2.imwrite(str(path), img, params)
    assert raster_size(path.read_bytes()[:4096], path) == (457, 123)


def test_raster_size_of_a_tiff_whose_directory_follows_its_pixels(tmp_path):
    import struct

    from fetalbio.io import raster_size

    # a little-endian TIFF written by hand: header, 4000 bytes of pixels, then the directory (tags 256/257)
    entries = [(256, 4, 1, 50), (257, 3, 1, 80)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    data = b"II*\x00" + struct.pack("<I", 8 + 4000) + bytes(4000) + ifd
    (tmp_path / "late.tif").write_bytes(data)
    assert raster_size(data[:64], tmp_path / "late.tif") == (50, 80)
    assert raster_size(data[:64]) is None  # without the file, beyond the bytes given: unknown, not wrong


def _pages(k: int) -> list[np.ndarray]:
    rng = np.random.default_rng(k)
    base = ramp(60, 80).astype(int) // 2
    return [np.clip(base + 40 * i + rng.integers(0, 9, (60, 80)), 1, 254).astype(np.uint8) for i in range(k)]


def _write_animation(path: Path, frames: list[np.ndarray]) -> None:
    anim = cv2.Animation()
    anim.frames = [cv2.cvtColor(f, cv2.COLOR_GRAY2BGRA) for f in frames]
    anim.durations = [100] * len(frames)
    assert cv2.imwriteanimation(str(path), anim, [cv2.IMWRITE_WEBP_QUALITY, 101])


@pytest.mark.parametrize("name", ["cine.tif", "cine.png", "cine.webp"])
def test_multi_page_tiff_apng_and_animated_webp_are_cines(tmp_path, name):
    # only page 0 was read: a cine whose first page is noise was measured on the noise
    from fetalbio.io import count_frames

    pages, path = _pages(3), tmp_path / name
    if name.endswith(".tif"):
        assert cv2.imwritemulti(str(path), pages)
    else:
        _write_animation(path, pages)
    assert count_frames(path) == 3
    for k in range(3):
        np.testing.assert_allclose(
            read_scan(path, frame=k).pixels, pages[k], atol=0 if ".webp" not in name else 1
        )
    with pytest.raises(ScanError, match="frame 3 out of range \\(image has 3 frames\\)"):
        read_scan(path, frame=3)
    single = tmp_path / f"one{path.suffix}"
    cv2.imwrite(str(single), pages[0])
    assert count_frames(single) == 1


@pytest.mark.parametrize("dtype, size", [(np.uint8, 1), (np.uint16, 1), (np.uint16, 9)])
def test_a_white_is_zero_tiff_is_read_with_bright_echoes(tmp_path, dtype, size):
    # PhotometricInterpretation 0 (WhiteIsZero): OpenCV inverts an 8-bit one, not a 16-bit one; at a real
    # scan's size the directory lies after the pixels, beyond the first 64 KiB
    import struct

    grey = _pages(1)[0].astype(dtype) * (257 if dtype == np.uint16 else 1)
    grey = np.tile(grey, (size, size))
    top = np.iinfo(dtype).max
    path = tmp_path / "wiz.tif"
    # uncompressed: the stored values of a WhiteIsZero file showing ``grey``
    assert cv2.imwrite(str(path), top - grey, [cv2.IMWRITE_TIFF_COMPRESSION, 1])
    data = bytearray(path.read_bytes())
    (offset,) = struct.unpack("<I", data[4:8])
    for k in range(struct.unpack("<H", data[offset : offset + 2])[0]):
        entry = offset + 2 + 12 * k
        if struct.unpack("<H", data[entry : entry + 2])[0] == 262:
            data[entry + 8 : entry + 10] = struct.pack("<H", 0)
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(read_scan(path).pixels, grey)


def test_a_jpeg_compressed_dicom_cut_short_says_so(tmp_path):
    # pydicom reads nothing after the header of such a file: it was called "a non-image object"
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    img = ramp(120, 160)
    path = make_dicom(tmp_path / "j.dcm", img)
    ds = dcmread(path)
    ds.PixelData = encapsulate([cv2.imencode(".jpg", img)[1].tobytes()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.save_as(path, enforce_file_format=True)
    assert read_scan(path).pixels.shape == (120, 160)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[: int(path.stat().st_size * 0.85)])
    with pytest.warns(UserWarning), pytest.raises(ScanError, match="damaged or cut short"):
        read_scan(cut)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".png", ".webp", ".jpg.png"])
def test_exif_orientation_of_png_webp_and_misnamed_jpeg_is_applied(tmp_path, orientation, suffix):
    # a browser shows such a file turned; points were reported in the stored frame (149 px off what the
    # user sees). The oracle is Pillow's own exif_transpose.
    Image = pytest.importorskip("PIL.Image")
    ImageOps = pytest.importorskip("PIL.ImageOps")

    stored = np.zeros((60, 90), np.uint8)
    stored[5:20, 10:40] = 200  # an asymmetric mark, so that every orientation differs
    stored[30:55, 60:85] = 120
    exif = Image.Exif()
    exif[274] = orientation
    path = tmp_path / f"o{suffix}"
    fmt = "JPEG" if suffix == ".jpg.png" else suffix.lstrip(".").upper()
    Image.fromarray(stored).save(path, format=fmt, exif=exif, **({"lossless": True} if fmt == "WEBP" else {}))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("L"))
    got = read_scan(path).pixels
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= (40 if fmt == "JPEG" else 0)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_damaged_headers_are_error_rows_not_tracebacks(tmp_path):
    # a 6-byte TIFF and a PNG with a cut-short eXIf chunk raised struct.error through the whole run
    (tmp_path / "short.tif").write_bytes(b"II*\x00\x08\x00")
    with pytest.raises(ScanError):
        read_scan(tmp_path / "short.tif")
    png = cv2.imencode(".png", ramp())[1].tobytes()
    (tmp_path / "exif.png").write_bytes(png[:33] + _png_chunk(b"eXIf", b"II*\x00") + png[33:])
    np.testing.assert_array_equal(
        read_scan(tmp_path / "exif.png").pixels, ramp()
    )  # orientation unknown: as stored


def test_a_tiff_thumbnail_page_is_no_frame_and_every_frame_is_turned_alike(tmp_path):
    import struct

    from fetalbio.io import count_frames

    scan = ramp(54, 80)
    path = tmp_path / "thumb.tif"
    assert cv2.imwritemulti(str(path), [scan, cv2.resize(scan, (20, 13))])  # a scan and its preview
    assert count_frames(path) == 2
    with pytest.raises(ScanError, match="frame 1 is not a frame of the cine"):
        read_scan(path, frame=1)
    # an animated PNG with EXIF orientation 6: frame 1 was read unturned, frame 0 turned
    anim = tmp_path / "anim.png"
    _write_animation(anim, [ramp(40, 80), ramp(40, 80)[:, ::-1].copy()])
    exif = (
        b"II*\x00" + struct.pack("<IH", 8, 1) + struct.pack("<HHIHH", 274, 3, 1, 6, 0) + struct.pack("<I", 0)
    )
    raw = anim.read_bytes()
    anim.write_bytes(raw[:33] + _png_chunk(b"eXIf", exif) + raw[33:])
    assert read_scan(anim, frame=0).pixels.shape == read_scan(anim, frame=1).pixels.shape == (80, 40)


def test_dicom_whose_compressed_image_is_not_its_header_size(tmp_path: Path) -> None:
    """A JPEG frame of 790x539 px in a DICOM whose header says 800x540: the reason was numpy's
    'could not broadcast input array from shape (425810,) into shape (432000,)'."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit, generate_uid

    ok, jpeg = cv2.imencode(".jpg", (np.random.default_rng(0).random((539, 790)) * 255).astype(np.uint8))
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.Rows, ds.Columns, ds.SamplesPerPixel = "US", 540, 800, 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = encapsulate([jpeg.tobytes()])
    ds["PixelData"].is_undefined_length = True
    ds.save_as(tmp_path / "mis.dcm", enforce_file_format=True)
    with pytest.raises(ScanError) as info:
        read_scan(tmp_path / "mis.dcm")
    assert "the image does not have the 800x540 px (Columns x Rows) its header says" in str(info.value)
    assert "broadcast" not in str(info.value)
