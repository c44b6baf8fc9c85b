"""Writing test DICOM files: uncompressed ultrasound images (single and multi-frame) and regions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

US_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME_STORAGE = "1.2.840.10008.5.1.4.1.1.3.1"


def make_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    signed: bool = False,
    frames: int | None = None,
    **elements: Any,
) -> Path:
    """Write an uncompressed ultrasound DICOM; pixels (H, W), (H, W, 3), (F, H, W) or (F, H, W, 3)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = US_MULTIFRAME_STORAGE if frames else US_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientName = "Synthetic^Test"
    colour = photometric not in ("MONOCHROME1", "MONOCHROME2", "PALETTE COLOR")
    shape = pixels.shape[1:] if frames else pixels.shape
    ds.Rows, ds.Columns = int(shape[0]), int(shape[1])
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    if frames:
        ds.NumberOfFrames = frames
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def us_region(
    dx_cm: float,
    dy_cm: float,
    *,
    box: tuple[int, int, int, int] = (0, 0, 63, 47),
    spatial_format: int = 1,
    units: tuple[int, int] = (3, 3),
) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat = spatial_format
    region.RegionDataType = 1
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = box[0], box[1]
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = box[2], box[3]
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = units
    region.PhysicalDeltaX = dx_cm
    region.PhysicalDeltaY = dy_cm
    return region


STUDY_IDENTITY = {  # what an SR must copy from its source, never invent
    "PatientID": "FB-0042",
    "PatientName": "Doe^Jane",
    "PatientBirthDate": "19900101",
    "PatientSex": "F",
    "AccessionNumber": "ACC42",
    "StudyID": "S42",
    "StudyDate": "20261126",
    "StudyTime": "101500",
    "ReferringPhysicianName": "Ref^Doctor",
}


def write_study(
    folder: Path, n: int, *, multiframe: int = 0, seed: int = 0, study_uid: str | None = None
) -> tuple[str, list[Path]]:
    """A synthetic ultrasound study: ``n`` single-frame scans (plus ``multiframe`` 3-frame cines) with a
    bright skull ring, ultrasound-region spacing 0.2 mm and a full patient/study identity.
    Returns (study UID, paths)."""
    from fetalbio.synthetic import draw_scan, random_ellipse

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    hw = (240, 320)
    region = [us_region(0.02, 0.02, box=(0, 0, hw[1] - 1, hw[0] - 1))]
    common = dict(
        STUDY_IDENTITY,
        StudyInstanceUID=study_uid,
        SeriesInstanceUID=series_uid,
        SeriesNumber=1,
        SequenceOfUltrasoundRegions=region,
    )
    paths = []
    for i in range(n):
        img = draw_scan(hw, random_ellipse(hw, rng), rng)
        paths.append(make_dicom(folder / f"us_{i:03d}.dcm", img, InstanceNumber=i + 1, **common))
    for j in range(multiframe):
        cine = np.stack([draw_scan(hw, random_ellipse(hw, rng), rng) for _ in range(3)])
        paths.append(
            make_dicom(folder / f"cine_{j:03d}.dcm", cine, frames=3, InstanceNumber=n + j + 1, **common)
        )
    return study_uid, paths


def require_tool(name: str) -> str:
    """The path of a Debian validator (dciodvfy, dsrdump); skipped when absent, failed in CI
    (FETALBIO_REQUIRE_TOOLS=1: .ci/run installs them)."""
    import os
    import shutil

    import pytest

    path = shutil.which(name)
    if path is None:
        if os.environ.get("FETALBIO_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{name} is not installed (.ci/run installs it)")
        pytest.skip(f"{name} is not installed (Debian dicom3tools / dcmtk)")
    return path


def validate_sr(path: Path) -> str:
    """Run dciodvfy (no errors, the Comprehensive SR IOD recognised) and dsrdump (reads it) on an SR;
    returns dsrdump's text."""
    import subprocess

    res = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    out = res.stdout + res.stderr
    # warnings are allowed (a source without a Patient ID gives an SR without one: dciodvfy warns)
    assert res.returncode == 0 and "Error" not in out and "ComprehensiveSR" in out.splitlines(), out
    dump = subprocess.run(
        [require_tool("dsrdump"), "-Ec", str(path)], capture_output=True, text=True, timeout=60
    )
    assert dump.returncode == 0, dump.stderr
    return dump.stdout
