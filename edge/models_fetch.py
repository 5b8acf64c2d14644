"""``emotion-edge models fetch``: download the YuNet face detector and verify it before it is used.

The detector is not shipped in the wheel: it is fetched once onto the device (or copied there with
``--url file:///...`` on machines without internet) and named in the config as ``[face] detector_model``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

YUNET_URL = "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/face_detection_yunet_2023mar.onnx"
YUNET_FILENAME = "face_detection_yunet_2023mar.onnx"
# OpenCV Zoo's Git-LFS oid of face_detection_yunet_2023mar.onnx (232,589 bytes).
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"

EXIT_USAGE = 64  # sysexits EX_USAGE
EXIT_DATA_ERROR = 65  # sysexits EX_DATAERR
EXIT_UNAVAILABLE = 69  # sysexits EX_UNAVAILABLE
EXIT_CANTCREAT = 73  # sysexits EX_CANTCREAT

# The real file is 232 KB; a bigger answer is an error page or the wrong thing, and must not fill the SD card.
MAX_BYTES = 16 * 1024 * 1024
TIMEOUT_S = 60.0
_CHUNK = 64 * 1024


class FetchError(Exception):
    """A download that did not produce a verified file; ``exit_code`` is the sysexits code to return."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_dest() -> Path:
    """``$XDG_CACHE_HOME/emotion-edge/models``, which is ``~/.cache/emotion-edge/models`` by default."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "emotion-edge" / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(
    url: str = YUNET_URL,
    dest_dir: Path | None = None,
    *,
    filename: str = YUNET_FILENAME,
    expected_sha256: str = YUNET_SHA256,
    timeout_s: float = TIMEOUT_S,
) -> Path:
    """Download ``url`` to ``dest_dir/filename`` if its sha256 matches; returns the absolute path.

    An already present file with the right hash is kept (no download), so provisioning can rerun offline.
    The file appears only complete and verified: it is written beside the target and renamed into place.
    """
    dest_dir = (dest_dir if dest_dir is not None else default_dest()).expanduser().absolute()
    target = dest_dir / filename
    try:
        if target.is_file() and sha256_of(target) == expected_sha256:
            return target
        dest_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.", suffix=".part")
    except OSError as exc:
        raise FetchError(f"cannot write to {dest_dir}: {exc.strerror or exc}", EXIT_CANTCREAT) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            actual = _download(url, out, timeout_s)
            out.flush()
            os.fsync(out.fileno())
        if actual != expected_sha256:
            raise FetchError(
                f"{url}: sha256 {actual} does not match the expected {expected_sha256}; not saved",
                EXIT_DATA_ERROR,
            )
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the daemon may run as another user
        os.replace(tmp, target)
    except OSError as exc:
        raise FetchError(f"cannot write {target}: {exc.strerror or exc}", EXIT_CANTCREAT) from None
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _download(url: str, out: IO[bytes], timeout_s: float) -> str:
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            while chunk := response.read(_CHUNK):
                size += len(chunk)
                if size > MAX_BYTES:
                    raise FetchError(
                        f"{url}: larger than {MAX_BYTES} bytes; not a YuNet model", EXIT_DATA_ERROR
                    )
                digest.update(chunk)
                _write(out, chunk)
    except ValueError as exc:  # urllib's "unknown url type"
        raise FetchError(f"{url}: {exc} (a local file needs file:///absolute/path)", EXIT_USAGE) from None
    except urllib.error.HTTPError as exc:
        raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}", EXIT_UNAVAILABLE) from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot download {url}: {exc.reason} (offline?)", EXIT_UNAVAILABLE) from None
    except (OSError, http.client.HTTPException) as exc:
        # A connection that drops or times out half way.
        raise FetchError(f"download of {url} failed: {exc or type(exc).__name__}", EXIT_UNAVAILABLE) from None
    return digest.hexdigest()


def _write(out: IO[bytes], chunk: bytes) -> None:
    # Kept apart from the network errors above: a full disk is not "offline".
    try:
        out.write(chunk)
    except OSError as exc:
        raise FetchError(f"cannot write {out.name}: {exc.strerror or exc}", EXIT_CANTCREAT) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edge.calibration.models_command import register as register_personal_models

    models = subparsers.add_parser("models", help="download models; list, activate, roll back personal ones")
    sub = models.add_subparsers(dest="models_command", required=True)
    register_personal_models(sub)
    fetch_parser = sub.add_parser(
        "fetch",
        help="download the YuNet face detector from the OpenCV Zoo",
        description=f"Download {YUNET_FILENAME}, check its sha256 and save it. Exit {EXIT_DATA_ERROR} "
        f"(nothing saved) on a checksum mismatch, {EXIT_UNAVAILABLE} when the download fails.",
    )
    fetch_parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder to save it in (default: ~/.cache/emotion-edge/models)",
    )
    fetch_parser.add_argument(
        "--url", default=YUNET_URL, help="where to download from; file:///path copies a local file"
    )
    fetch_parser.set_defaults(func=_cmd_fetch)


def _cmd_fetch(args: argparse.Namespace) -> int:
    try:
        path = fetch(args.url, args.dest)
    except FetchError as exc:
        print(f"emotion-edge: models fetch: {exc}", file=sys.stderr)
        return exc.exit_code
    # The path alone on the first line, for scripts; then what to paste into the config file.
    print(path)
    print("# add to the config file:")
    print("[face]")
    print(f"detector_model = {json.dumps(str(path), ensure_ascii=False)}")
    return 0
