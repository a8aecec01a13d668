#!/usr/bin/env python3
"""The cluster's own small images (pause, CoreDNS) as docker-archive tarballs, without an engine.

    images.py pause|coredns BIN_DIR REF   -> prints the path of the cached tarball

Each image is one layer holding one static binary. The tarball is cached under the kubeloop cache,
keyed by the image reference, and rebuilt only when missing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

CACHE = Path(
    os.environ.get(
        "KUBELOOP_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kubeloop"
    )
)


def docker_archive(ref: str, files: dict[str, tuple[bytes, int]], config: dict) -> bytes:  # type: ignore[type-arg]
    """A docker-archive (what `docker save` writes) of one layer made of `files` (path -> (data, mode))."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, (data, mode) in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, 0
            tar.addfile(info, io.BytesIO(data))
    layer_bytes = layer.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "kubeloop cluster/images.py"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = diff_id.split(":")[1] + "/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [ref], "Layers": [layer_name]}]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in (
            (config_name, config_bytes),
            (layer_name, layer_bytes),
            ("manifest.json", json.dumps(manifest).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def pause_binary(bin_dir: Path) -> bytes:
    """Upstream's pause.c (shipped in the kubernetes module), compiled statically."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pause"
        subprocess.run(["gcc", "-Os", "-static", "-o", str(out), str(bin_dir / "pause.c")], check=True)
        subprocess.run(["strip", str(out)], check=True)
        return out.read_bytes()


def build(kind: str, bin_dir: Path, ref: str) -> Path:
    target = CACHE / "images" / (ref.replace("/", "_").replace(":", "_") + ".tar")
    if target.exists():
        return target
    if kind == "pause":
        files = {"pause": (pause_binary(bin_dir), 0o755)}
        config = {"Entrypoint": ["/pause"], "User": "65535:65535"}
    elif kind == "coredns":
        files = {"coredns": ((bin_dir / "coredns").read_bytes(), 0o755)}
        config = {"Entrypoint": ["/coredns"], "User": "65532:65532", "ExposedPorts": {"1053/udp": {}}}
    else:
        raise SystemExit(f"unknown image kind {kind!r}: expected pause or coredns")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(docker_archive(ref, files, config))
    tmp.replace(target)
    return target


if __name__ == "__main__":
    print(build(sys.argv[1], Path(sys.argv[2]), sys.argv[3]))
