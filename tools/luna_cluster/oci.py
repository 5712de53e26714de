"""OCI images written without a registry or a container engine.

Every pod needs a sandbox ("pause") container that only holds the pod's namespaces and reaps
zombies. Any static program that sleeps until signalled will do: Debian's ``catatonit -P`` is one.
:func:`write_single_binary_image` packs such a binary into an OCI image layout tarball that
``ctr images import`` accepts. :func:`write_image` does the same for an image of several layers
read from files (the control-plane images of a kind node image: :mod:`.kind_image`).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = "application/vnd.oci.image.config.v1+json"
_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _blob(archive: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    _add(archive, f"blobs/sha256/{digest}", data)
    return f"sha256:{digest}"


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    archive.addfile(info, io.BytesIO(data))


def _finish(
    archive: tarfile.TarFile, reference: str, config: Mapping[str, Any], layers: Sequence[tuple[str, int]]
) -> None:
    """Add the image's configuration, its manifest naming ``layers`` ((digest, size), already in
    the archive, lowest first) and the index naming it ``reference``."""
    config_bytes = json.dumps(config, sort_keys=True).encode()
    config_ref = _blob(archive, config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": _MANIFEST,
        "config": {"mediaType": _CONFIG, "digest": config_ref, "size": len(config_bytes)},
        "layers": [{"mediaType": _LAYER, "digest": digest, "size": size} for digest, size in layers],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_ref = _blob(archive, manifest_bytes)
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": _MANIFEST,
                "digest": manifest_ref,
                "size": len(manifest_bytes),
                "annotations": {
                    "io.containerd.image.name": reference,
                    "org.opencontainers.image.ref.name": reference.rsplit(":", 1)[-1],
                },
            }
        ],
    }
    _add(archive, "index.json", json.dumps(index, sort_keys=True).encode())


def layer_with(binary: Path, inside: str) -> bytes:
    """An uncompressed layer holding ``binary`` at ``/inside`` (mode 0755, owned by root)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        _add(layer, inside, binary.read_bytes(), mode=0o755)
    return buffer.getvalue()


def write_single_binary_image(binary: Path, reference: str, entrypoint: list[str], target: Path) -> None:
    """Write an OCI layout tarball of one image named ``reference`` whose only file is ``binary``."""
    layer = layer_with(binary, entrypoint[0].lstrip("/"))
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "User": "65535:65535"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }
    with tarfile.open(target, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _add(archive, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        layer_ref = _blob(archive, layer)
        _finish(archive, reference, config, [(layer_ref, len(layer))])


def write_layer(files: Mapping[str, Path], target: Path) -> None:
    """Write an uncompressed layer to ``target``: each ``files`` key is a path inside the image (its
    folders are created), each value the file to put there (mode 0755, owned by root)."""
    folders = sorted(
        {
            "/".join(inside.strip("/").split("/")[:depth])
            for inside in files
            for depth in range(1, len(inside.strip("/").split("/")))
        }
    )
    with tarfile.open(target, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            layer.addfile(info)
        for inside, source in sorted(files.items()):
            info = tarfile.TarInfo(inside.strip("/"))
            info.size = source.stat().st_size
            info.mode = 0o755
            with source.open("rb") as handle:
                layer.addfile(info, handle)


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def write_image(target: Path, reference: str, layers: Sequence[Path], config: Mapping[str, Any]) -> None:
    """Write an OCI layout tarball of one image named ``reference``: ``layers`` are uncompressed
    layer tarballs (lowest first), ``config`` the image's runtime configuration (``Entrypoint``,
    ``Env``, ``User``: the ``config`` object of an OCI image configuration)."""
    digests = [_file_digest(layer) for layer in layers]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": dict(config),
        "rootfs": {"type": "layers", "diff_ids": digests},
    }
    with tarfile.open(target, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _add(archive, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        for layer, digest in zip(layers, digests, strict=True):
            info = tarfile.TarInfo(f"blobs/sha256/{digest.removeprefix('sha256:')}")
            info.size = layer.stat().st_size
            info.mode = 0o644
            with layer.open("rb") as handle:
                archive.addfile(info, handle)
        _finish(
            archive,
            reference,
            image_config,
            [(digest, layer.stat().st_size) for layer, digest in zip(layers, digests, strict=True)],
        )
