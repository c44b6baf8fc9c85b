"""A real PACS for the tests: Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) on a loopback port with
a temporary storage folder and a password, started and stopped by the tests."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "fetalbio", "pacs-secret-7"


def available() -> str | None:
    """None when Orthanc and its DICOMweb plugin are installed, else why not (a skip reason)."""
    if not shutil.which("Orthanc"):
        return "Orthanc is not installed (Debian package orthanc)"
    if not PLUGIN.exists():
        return "the Orthanc DICOMweb plugin is not installed (Debian package orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    http: str  # http://127.0.0.1:PORT
    process: subprocess.Popen

    @property
    def dicomweb(self) -> str:
        return f"{self.http}/dicom-web"

    def upload(self, path: Path) -> None:
        import requests

        r = requests.post(f"{self.http}/instances", data=path.read_bytes(), auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()

    def get(self, route: str):
        import requests

        r = requests.get(f"{self.http}{route}", auth=(USER, PASSWORD), timeout=30)
        r.raise_for_status()
        return r.json()


@contextmanager
def orthanc(folder: Path):
    """Start Orthanc on free loopback ports; yield a :class:`Server`; stop it (and wait) afterwards."""
    import requests

    folder.mkdir(parents=True, exist_ok=True)
    http_port = free_port()
    config = {
        "Name": "fetalbio-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        # QIDO answers from Orthanc's database, not by reading each stored file
        "DicomWeb": {
            "Enable": True,
            "Root": "/dicom-web/",
            "StudiesMetadata": "MainDicomTags",
            "SeriesMetadata": "MainDicomTags",
        },  # fmt: skip
        "StorageCompression": False,
        "MaximumStorageCacheSize": 0,  # serve every instance from its file (a test damages one)
        "HttpTimeout": 60,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    proc = subprocess.Popen(["Orthanc", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{http_port}", proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(folder / 'orthanc.log').read_text()[-2000:]}")
            try:
                if requests.get(f"{server.http}/system", auth=(USER, PASSWORD), timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Orthanc did not start within 30 s")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
