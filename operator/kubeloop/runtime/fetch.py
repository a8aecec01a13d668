"""Fetch a model directory from the store into a local directory, verifying the model's sha256.

``python -m kubeloop.runtime fetch --uri URI --sha256 HEX --dest DIR``: URI is the model directory
(``.../models/<sha256>``). Used by the inference pod's init step; a mismatch exits 2 and leaves no model.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from kubeloop.contract import BASELINE_FILE, MODEL_FILE, MODEL_MARKER
from kubeloop.runtime import jobio
from kubeloop.runtime.jobio import DataError
from kubeloop.runtime.store import StoreError, open_store

FILES = (MODEL_FILE, BASELINE_FILE, MODEL_MARKER)  # the marker last: a model is complete once it exists


def fetch(uri: str, sha256: str, dest: str) -> dict[str, str]:
    store = open_store(uri)
    if not store.exists(MODEL_MARKER):
        raise DataError(
            "ModelNotFound",
            f"{store.uri(MODEL_MARKER)} does not exist: {uri} is not a complete model "
            "directory (missing, or its upload did not finish)",
        )
    target = Path(dest)
    target.mkdir(parents=True, exist_ok=True)
    # Download beside the destination and move in only after the checksum matched.
    with tempfile.TemporaryDirectory(dir=target, prefix=".fetch-") as tmp:
        try:
            for name in FILES:
                store.get_file(name, Path(tmp) / name, sha256=sha256 if name == MODEL_FILE else None)
        except StoreError as exc:
            if "checksum mismatch" in str(exc):
                raise DataError("ChecksumMismatch", f"{exc}; the model was not installed in {dest}") from None
            raise DataError("ModelNotFound", str(exc)) from None
        for name in FILES:
            shutil.move(str(Path(tmp) / name), target / name)
    print(f"fetched {uri} into {dest} ({MODEL_FILE} sha256 {sha256})")
    return {"uri": uri, "sha256": sha256.lower(), "dest": str(target)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubeloop.runtime fetch", description=__doc__)
    parser.add_argument("--uri", required=True, help="model directory URI (s3://, file://, pvc://)")
    parser.add_argument("--sha256", required=True, help="expected sha256 of model.onnx")
    parser.add_argument("--dest", required=True, help="local directory to write the model into")
    args = parser.parse_args(argv)
    return jobio.run("fetch", lambda: fetch(args.uri, args.sha256, args.dest))


if __name__ == "__main__":
    raise SystemExit(main())
