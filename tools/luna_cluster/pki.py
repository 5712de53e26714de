"""A private CA and the certificates of the local control plane, made with the ``openssl`` CLI.

All keys are ECDSA P-256 (fast to generate, accepted by every Kubernetes component). The CA and
the service-account signing key are made once per state directory and reused by later ``up``s.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_DAYS = 3650
LEAF_DAYS = 825


class PkiError(RuntimeError):
    """openssl is missing or failed."""


@dataclass(frozen=True)
class Pki:
    directory: Path

    def path(self, name: str) -> Path:
        return self.directory / name

    @property
    def ca_cert(self) -> Path:
        return self.path("ca.crt")

    @property
    def ca_key(self) -> Path:
        return self.path("ca.key")

    @property
    def sa_key(self) -> Path:
        return self.path("sa.key")

    @property
    def sa_pub(self) -> Path:
        return self.path("sa.pub")


def _openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    if binary is None:
        raise PkiError(
            "the `openssl` command is needed to make the cluster certificates (apt-get install openssl)"
        )
    result = subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise PkiError(f"openssl {args[0]} failed: {result.stderr.strip()}")


def _new_key(path: Path) -> None:
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        str(path),
        cwd=path.parent,
    )
    path.chmod(0o600)


def ensure_ca(pki: Pki) -> None:
    """Create the CA and the service-account key pair unless they exist."""
    pki.directory.mkdir(parents=True, exist_ok=True)
    if not (pki.ca_cert.is_file() and pki.ca_key.is_file()):
        _new_key(pki.ca_key)
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            str(pki.ca_key),
            "-out",
            str(pki.ca_cert),
            "-days",
            str(CA_DAYS),
            "-subj",
            "/CN=luna-plugins-local-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
            cwd=pki.directory,
        )
    if not (pki.sa_key.is_file() and pki.sa_pub.is_file()):
        _new_key(pki.sa_key)
        _openssl("pkey", "-in", str(pki.sa_key), "-pubout", "-out", str(pki.sa_pub), cwd=pki.directory)


def subject(common_name: str, organization: str | None = None) -> str:
    """An openssl ``-subj`` string; the organization becomes the Kubernetes group."""
    return (f"/O={organization}" if organization else "") + f"/CN={common_name}"


def extensions(server: bool, client: bool, dns: tuple[str, ...] = (), ips: tuple[str, ...] = ()) -> str:
    """The x509v3 extension section of a leaf certificate."""
    usages = [name for name, wanted in (("serverAuth", server), ("clientAuth", client)) if wanted]
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={','.join(usages)}",
    ]
    names = [f"DNS:{name}" for name in dns] + [f"IP:{ip}" for ip in ips]
    if names:
        lines.append(f"subjectAltName={','.join(names)}")
    return "\n".join(lines) + "\n"


def issue(
    pki: Pki,
    name: str,
    common_name: str,
    *,
    organization: str | None = None,
    server: bool = False,
    client: bool = False,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> tuple[Path, Path]:
    """Issue ``name.crt``/``name.key`` signed by the CA (reused when present); returns (cert, key)."""
    cert, key = pki.path(f"{name}.crt"), pki.path(f"{name}.key")
    if cert.is_file() and key.is_file():
        return cert, key
    _new_key(key)
    csr, ext = pki.path(f"{name}.csr"), pki.path(f"{name}.ext")
    ext.write_text(extensions(server, client, dns, ips))
    try:
        _openssl(
            "req",
            "-new",
            "-key",
            str(key),
            "-out",
            str(csr),
            "-subj",
            subject(common_name, organization),
            cwd=pki.directory,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(pki.ca_cert),
            "-CAkey",
            str(pki.ca_key),
            "-CAcreateserial",
            "-out",
            str(cert),
            "-days",
            str(LEAF_DAYS),
            "-sha256",
            "-extfile",
            str(ext),
            cwd=pki.directory,
        )
    finally:
        csr.unlink(missing_ok=True)
        ext.unlink(missing_ok=True)
    return cert, key
