"""Published weights by name (keras_alexnet.weights.hub) against a local HTTP server.

The server on 127.0.0.1 serves test files with Range support and can cut a response short;
no test reaches the internet.
"""

import dataclasses
import hashlib
import http.server
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from keras_alexnet import build_model
from keras_alexnet.registry import get_spec
from keras_alexnet.weights import hub, read

PAYLOAD = np.random.default_rng(0).integers(0, 256, 3 * hub.CHUNK + 12345, np.uint8).tobytes()


class Handler(http.server.BaseHTTPRequestHandler):
    """GET with Range: 206 from the asked offset; `cut` bytes then a dropped connection."""

    files, cut, seen = {}, {}, []

    def do_GET(self):  # noqa: N802 - http.server's name
        data = self.files.get(self.path)
        self.seen.append((self.path, self.headers.get("Range")))
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
            if start >= len(data):  # as real servers answer a range past the end
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.cut.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """A local server: (base URL, Handler) with empty file table and no cuts."""
    Handler.files, Handler.cut, Handler.seen = {}, {}, []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", Handler
    httpd.shutdown()
    httpd.server_close()


def published(url, data, algorithm="sha256", prefix=8, model="vgg_a"):
    """A Published entry for `data` served at `url`, with its digest (or its start)."""
    digest = hashlib.new(algorithm, data).hexdigest()[:prefix]
    return hub.Published("torchvision", model, url, algorithm, digest, "a test")


def offline(monkeypatch):
    """Make every download fail as an unreachable network would."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_a_download_is_verified_kept_and_then_used_offline(server, tmp_path, monkeypatch):
    base, handler = server
    handler.files["/w-1.pth"] = PAYLOAD
    entry = published(f"{base}/w-1.pth", PAYLOAD)
    path = hub.fetch(entry, tmp_path, log=lambda *a: None)
    assert path == tmp_path / "weights" / "w-1.pth" and path.read_bytes() == PAYLOAD
    assert not path.with_name("w-1.pth.part").exists()
    offline(monkeypatch)
    assert hub.fetch(entry, tmp_path, log=lambda *a: None) == path  # a cache hit, no network


def test_a_cut_download_resumes_where_it_stopped(server, tmp_path):
    base, handler = server
    handler.files["/w-2.pth"] = PAYLOAD
    handler.cut["/w-2.pth"] = hub.CHUNK + 100
    entry = published(f"{base}/w-2.pth", PAYLOAD)
    with pytest.raises(hub.HubError, match="run again to resume") as error:
        hub.fetch(entry, tmp_path, log=lambda *a: None)
    assert "\n" not in str(error.value)
    part = tmp_path / "weights" / "w-2.pth.part"
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD)
    path = hub.fetch(entry, tmp_path, log=lambda *a: None)
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert handler.seen[-1] == ("/w-2.pth", f"bytes={kept}-")


def test_a_part_cut_after_its_last_byte_is_checked_and_kept(server, tmp_path):
    # Killed between the last byte and the hash check: the next run's Range is past the end.
    base, handler = server
    handler.files["/w-5.pth"] = PAYLOAD
    entry = published(f"{base}/w-5.pth", PAYLOAD)
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "w-5.pth.part").write_bytes(PAYLOAD)
    path = hub.fetch(entry, tmp_path, log=lambda *a: None)
    assert path.read_bytes() == PAYLOAD and handler.seen == [("/w-5.pth", f"bytes={len(PAYLOAD)}-")]


def test_a_file_that_does_not_match_its_hash_is_refused_and_removed(server, tmp_path):
    base, handler = server
    handler.files["/w-3.pth"] = PAYLOAD
    entry = dataclasses.replace(published(f"{base}/w-3.pth", PAYLOAD), digest="00000000")
    with pytest.raises(hub.HubError, match="does not match its published sha256"):
        hub.fetch(entry, tmp_path, log=lambda *a: None)
    assert list((tmp_path / "weights").iterdir()) == []


def test_a_missing_file_and_no_network_say_where_to_put_the_file(server, tmp_path, monkeypatch):
    base, _ = server
    entry = published(f"{base}/w-4.pth", PAYLOAD)
    for expect in ("HTTP 404", "unreachable"):
        with pytest.raises(hub.HubError, match=expect) as error:
            hub.fetch(entry, tmp_path, log=lambda *a: None)
        message = str(error.value)
        assert "\n" not in message and entry.url in message
        assert str(tmp_path / "weights" / "w-4.pth") in message
        offline(monkeypatch)


def test_each_source_name_resolves_to_its_publishers_file():
    assert hub.find("imagenet", "vgg_d").source == "keras"  # Keras Applications first
    assert hub.find("torchvision", "vgg_d").filename == "vgg16-397923af.pth"
    assert hub.find("imagenet", "vgg16_bn").filename == "vgg16_bn-6c64b313.pth"
    assert hub.find("Caffe", "alexnet").digest == "9116a64c0fbe4459d18f4bb6b56d647b63920377"
    with pytest.raises(hub.HubError, match="keras publishes no weights for vgg_a; .*torchvision"):
        hub.find("keras", "vgg_a")
    for entry in hub.PUBLISHED:  # every row names a model of the registry and a real hash
        assert get_spec(entry.model).name == entry.model
        assert entry.algorithm in hashlib.algorithms_available and int(entry.digest, 16) >= 0


def test_build_model_takes_a_publishers_name(server, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from torch_reference import torch_vgg

    reference = torch_vgg("vgg11", 1 / 16, seed=21)
    file = tmp_path / "vgg11-test.pth"
    torch.save(reference.state_dict(), file)
    base, handler = server
    handler.files["/vgg11-test.pth"] = file.read_bytes()
    entry = published(f"{base}/vgg11-test.pth", file.read_bytes())
    monkeypatch.setattr(hub, "PUBLISHED", (entry,))
    monkeypatch.setenv("KERAS_ALEXNET_CACHE", str(tmp_path / "cache"))
    by_name = build_model("vgg11", weights="torchvision")
    by_path = build_model("vgg11", weights=file)
    for a, b in zip(by_name.get_weights(), by_path.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (tmp_path / "cache" / "weights" / "vgg11-test.pth").is_file()
    weights, _ = read("imagenet", get_spec("vgg11"))  # from the cache now
    assert set(weights) == {layer.name for layer in by_path.layers if layer.get_weights()}


def test_the_weights_page_lists_every_published_file_as_the_code_does():
    page = (Path(__file__).resolve().parents[1] / "docs" / "weights.md").read_text()
    assert hub.table() in page
