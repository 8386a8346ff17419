"""Certificates for the TLS tests, made with the openssl command an operator would use: self-signed server
certificates and CAs, and client certificates signed by a CA. Each is `<name>.pem` and `<name>.key` in a folder."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from prerequisites import missing


def require_openssl() -> None:
    if not shutil.which("openssl"):
        missing("openssl is not installed: apt-get install openssl")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=cwd)


def self_signed(directory: Path, name: str, common_name: str, *, ip: str | None = None) -> tuple[Path, Path]:
    """A self-signed certificate (a server's, or a CA's) for `common_name`, valid for a day; `ip` adds it as a
    subjectAltName so clients that check the address accept it."""
    require_openssl()
    extra = ("-addext", f"subjectAltName=IP:{ip}") if ip else ()
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={common_name}", *extra),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem"),
        cwd=directory,
    )
    return directory / f"{name}.pem", directory / f"{name}.key"


def signed_by(directory: Path, name: str, ca: str) -> tuple[Path, Path]:
    """A certificate for the common name `name` signed by the CA `ca` (made by `self_signed` in `directory`)."""
    require_openssl()
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}"),
        *("-keyout", f"{name}.key", "-out", f"{name}.csr"),
        cwd=directory,
    )
    _openssl(
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial"),
        *("-days", "1", "-out", f"{name}.pem"),
        cwd=directory,
    )
    return directory / f"{name}.pem", directory / f"{name}.key"
