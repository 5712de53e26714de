"""A self-signed certificate for the admission webhook, made with the ``openssl`` CLI."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    """(cert, key) valid for ``host`` (an IP or DNS name); reused when already made for it."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, marker = directory / "tls.crt", directory / "tls.key", directory / "host"
    if cert.exists() and key.exists() and marker.exists() and marker.read_text() == host:
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError(
            "openssl is needed to make the webhook certificate; or pass --webhook-cert/--webhook-key"
        )
    san = f"IP:{host}" if host.replace(".", "").isdigit() or ":" in host else f"DNS:{host}"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "825",
            "-subj",
            "/CN=luna-plugins-webhook",
            "-addext",
            f"subjectAltName={san}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    marker.write_text(host)
    return cert, key
