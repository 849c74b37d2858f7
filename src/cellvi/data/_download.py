"""Downloading a file once, whole or not at all."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request

logger = logging.getLogger("cellvi")

_CHUNK_BYTES = 1 << 20


def _download(url: str | None, save_path: str | os.PathLike, filename: str) -> None:
    """Download ``url`` to ``save_path/filename`` unless that file exists already.

    The file is written under a temporary name in ``save_path`` and renamed when complete, so
    an interrupted download never leaves a partial file under the final name. ``url=None``
    (no source known) only logs that the file is missing.

    Raises
    ------
    FileNotFoundError
        If the server has no file at ``url`` (HTTP 404).
    """
    target = os.path.join(save_path, filename)
    if os.path.exists(target):
        logger.info("File %s already downloaded", target)
        return
    if url is None:
        logger.info("No URL given for the missing file %s", target)
        return
    os.makedirs(save_path, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "cellvi"})
    logger.info("Downloading %s to %s", url, target)
    try:
        with urllib.request.urlopen(request) as response:
            descriptor, partial = tempfile.mkstemp(dir=save_path, prefix=f".{filename}.")
            try:
                with os.fdopen(descriptor, "wb") as file:
                    shutil.copyfileobj(response, file, _CHUNK_BYTES)
                os.replace(partial, target)
            except BaseException:
                os.unlink(partial)
                raise
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise FileNotFoundError(f"No file at {url} (HTTP 404).") from error
        raise
