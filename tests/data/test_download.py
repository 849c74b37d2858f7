"""``_download``: a file is fetched once, whole, from a URL (here a local server)."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from cellvi.data._download import _download


@pytest.fixture
def server(tmp_path):
    """An HTTP server on localhost serving ``tmp_path / "remote"``; yields its base URL."""
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "data.bin").write_bytes(bytes(range(256)) * 5000)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(remote))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()


def test_downloads_the_file_whole(server, tmp_path):
    target = tmp_path / "local"  # created on the way
    _download(f"{server}/data.bin", str(target), "copy.bin")
    assert (target / "copy.bin").read_bytes() == bytes(range(256)) * 5000
    assert [p.name for p in target.iterdir()] == ["copy.bin"]  # no partial file left


def test_an_existing_file_is_not_downloaded_again(server, tmp_path):
    (tmp_path / "copy.bin").write_bytes(b"mine")
    _download(f"{server}/data.bin", str(tmp_path), "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == b"mine"


def test_no_url_only_logs(tmp_path, caplog):
    with caplog.at_level("INFO", logger="cellvi"):
        _download(None, str(tmp_path), "missing.bin")
    assert not (tmp_path / "missing.bin").exists()
    assert "No URL given" in caplog.text


def test_a_missing_remote_file_is_file_not_found(server, tmp_path):
    with pytest.raises(FileNotFoundError, match="HTTP 404"):
        _download(f"{server}/nope.bin", str(tmp_path), "nope.bin")
    assert list(tmp_path.iterdir()) == [tmp_path / "remote"]  # nothing written
