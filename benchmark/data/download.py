"""Fetch PTB and WikiText-2 into a directory, only when asked, and never half-way.

    python -m benchmark.data.download {ptb,wikitext2} --dir DIR

Why explicit: a benchmark run must not reach the network behind the user's back (a
cluster node may have none, and a silently re-downloaded file is a different
experiment). Downloads happen through this command or ``data.download=true``.

Why the care: a download that dies half-way must not leave a file that a later run
reads as the corpus. Every transfer streams into a temporary file inside the target
directory, is retried (resumed with an HTTP Range request when the server honours it,
else restarted), and its MD5 is checked *before* anything is renamed into place with
an atomic ``os.replace``; on any failure every temporary file is removed.

The sources are data (``SOURCES``); ``download`` takes the table as an argument, so a
test can point it at a loopback server. The checksums are the ones torchtext publishes
for the same files (MD5: no SHA-256 of these files is published by their sources).

Why not pooch (considered in issue 15): pooch's hash-checked, atomic fetch would do most
of this, but it restarts an interrupted transfer from byte 0 and retries a checksum
mismatch like a network error; here a transfer resumes with a Range request, and a
mismatch (a changed or wrong source) fails at once. Both behaviours are tested against a
loopback server. For two corpora of a few MB either would serve; the difference decides it.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import logging
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path

from tqdm import tqdm

from benchmark.data.corpus import DataError
from benchmark.data.sources import SOURCES, Remote, Source, command  # noqa: F401 - the table and command, re-exported

CHUNK = 1 << 16
log = logging.getLogger("benchmark.data.download")


class _Truncated(Exception):
    """The server closed the connection before sending everything it announced."""


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _attempt(url: str, tmp: Path, timeout: float, progress: bool) -> None:
    """One transfer into ``tmp``, resuming from its current size if the server allows.

    Raises ``_Truncated`` (or a network error) when fewer bytes arrive than announced.
    """
    have = tmp.stat().st_size
    request = urllib.request.Request(url, headers={"User-Agent": "rnn-dropout-bench"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # our partial file is not something the server can resume
            tmp.write_bytes(b"")
            raise _Truncated("range not satisfiable; restarting") from None
        raise
    with response:
        resumed = bool(have) and response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            tmp.write_bytes(b"")  # a range we did not ask for: start over without one
            raise _Truncated("unexpected Content-Range; restarting")
        mode = "ab" if resumed else "wb"
        start = have if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        received = start
        with open(tmp, mode) as out, tqdm(total=total, initial=start, unit="B", unit_scale=True, leave=False,
                                           desc=url.rsplit("/", 1)[-1], disable=not progress, mininterval=1.0) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except http.client.IncompleteRead as e:
                    out.write(e.partial)
                    raise _Truncated(f"{received + len(e.partial)} of {total} bytes") from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise _Truncated(f"{received} of {total} bytes")


def fetch(url: str, md5: str, directory: Path, retries: int = 4, wait: float = 1.0, timeout: float = 60.0,
          progress: bool = True) -> Path:
    """Download ``url`` into a temporary file in ``directory`` and check its MD5.

    Returns the temporary file (the caller renames or extracts it, and deletes it on
    failure). A failed or truncated transfer is retried up to ``retries`` times, waiting
    ``wait * attempt`` seconds in between; a checksum mismatch is not retried (a whole
    file with the wrong bytes is a changed or wrong source, not a flaky network).
    Every failure is a one-line ``DataError`` and leaves no temporary file behind.
    """
    usable_dir(directory)
    fd, name = tempfile.mkstemp(dir=directory, prefix=".download-", suffix=".part")
    os.close(fd)
    tmp = Path(name)
    try:
        last = "no attempt"
        for attempt in range(1, retries + 2):
            try:
                _attempt(url, tmp, timeout, progress)
                break
            except urllib.error.HTTPError as e:
                if 400 <= e.code < 500 and e.code not in (408, 429):
                    raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
                last = f"HTTP {e.code} {e.reason}"
            except (_Truncated, urllib.error.URLError, OSError, http.client.HTTPException) as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if attempt <= retries:
                log.warning("download of %s interrupted (%s); retry %d/%d", url, last, attempt, retries)
                time.sleep(wait * attempt)
        else:
            raise DataError(f"download of {url} failed after {retries + 1} attempts ({last}); "
                            f"nothing was written to {directory}")
        got = _md5(tmp)
        if got != md5:
            raise DataError(f"checksum mismatch for {url}: md5 {got}, expected {md5}; "
                            f"nothing was written to {directory}")
        return tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def usable_dir(directory: Path) -> None:
    """Create ``directory`` if needed; a path that cannot hold the files is a one-line ``DataError``."""
    if directory.exists() and not directory.is_dir():
        raise DataError(f"{directory} is a file, not a directory; give --dir a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create {directory}: {e.strerror}; give --dir a writable directory") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DataError(f"{directory} is not writable; give --dir a writable directory")


def _install(remote: Remote, tmp: Path, directory: Path) -> list[Path]:
    """Move a verified download into place: rename it, or extract the wanted zip members."""
    if remote.save_as:
        target = directory / remote.save_as
        os.replace(tmp, target)
        return [target]
    staged: list[tuple[Path, Path]] = []
    try:
        try:
            archive = zipfile.ZipFile(tmp)
        except zipfile.BadZipFile as e:
            raise DataError(f"{remote.url} is not a zip file ({e})") from None
        with archive:
            for member, out_name in remote.extract.items():
                fd, name = tempfile.mkstemp(dir=directory, prefix=".extract-", suffix=".part")
                staged.append((Path(name), directory / out_name))
                with os.fdopen(fd, "wb") as out:
                    try:
                        src = archive.open(member)
                    except KeyError:
                        raise DataError(f"{remote.url} has no member {member}") from None
                    with src:
                        for chunk in iter(lambda: src.read(1 << 20), b""):
                            out.write(chunk)
        for part, target in staged:
            os.replace(part, target)
        return [target for _, target in staged]
    finally:
        for part, _ in staged:
            part.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)


def download(name: str, directory: Path | str, sources: Mapping[str, Source] = SOURCES, force: bool = False,
             retries: int = 4, wait: float = 1.0, timeout: float = 60.0, progress: bool = True) -> list[Path]:
    """Fetch corpus ``name`` (a key of ``sources``) into ``directory``; returns the split files.

    Files already present are kept unless ``force``; the others are fetched, verified and
    moved into place. See ``fetch`` for retries and failure behaviour.
    """
    if name not in sources:
        raise DataError(f"no download source for corpus {name!r}; choose one of: {', '.join(sorted(sources))}")
    source = sources[name]
    directory = Path(directory).expanduser()
    for remote in source.remotes:
        if not force and all((directory / f).is_file() for f in remote.outputs()):
            continue
        tmp = fetch(remote.url, remote.md5, directory, retries=retries, wait=wait, timeout=timeout,
                    progress=progress)
        _install(remote, tmp, directory)
    return [directory / f for f in source.files]


def main(argv: list[str] | None = None) -> int:
    """The command line. Exit status 2 for a bad command line or an unusable --dir (like the suite's other
    commands), 1 when the download itself fails (the network, a checksum), 0 on success."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.data.download",
                                     description="Download a corpus's train/valid/test files, verified by MD5.")
    parser.add_argument("corpus", choices=sorted(SOURCES))
    parser.add_argument("--dir", required=True, type=Path, help="directory to put the split files in")
    parser.add_argument("--force", action="store_true", help="download even the files already present")
    parser.add_argument("--retries", type=int, default=4, help="retries of an interrupted transfer (default 4)")
    args = parser.parse_args(argv)
    if args.retries < 0:
        parser.error(f"--retries must be 0 or more, got {args.retries}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        usable_dir(args.dir.expanduser())
    except DataError as e:
        log.error("error: %s", e)
        return 2
    try:
        paths = download(args.corpus, args.dir, force=args.force, retries=args.retries)
    except DataError as e:
        log.error("error: %s", e)
        return 1
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
