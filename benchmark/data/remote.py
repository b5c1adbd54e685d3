"""The shared loader of corpora that ``download.py`` can fetch: present, fetched on request, or a clear error.

Why a loader never downloads by default: see ``download.py``. When files are missing
and ``download`` is false, the error names the directory, the missing files and the
exact command that fetches them.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.data.corpus import Corpus, DataError
from benchmark.data.sources import SOURCES, Source, command
from benchmark.data.textdir import check_directory, load_files, missing_files, resolve_dir


def load_source(name: str, cache_dir: Path | None, path: str | Path | None, download: bool,
                vocab_size: int | None, size: int | None, source: Source | None = None) -> Corpus:
    """Corpus ``name`` from the directory ``path``, downloading the missing files only if ``download``."""
    source = source if source is not None else SOURCES[name]
    directory = resolve_dir(path, name, f"to fetch its files run: {command(name, 'DIR')}")
    if directory.exists() or not download:
        check_directory(name, directory, source.files,
                        hint=f"download them with: {command(name, directory)} (or set data.download=true)")
    missing = missing_files(directory, source.files)
    if missing and download:
        from benchmark.data.download import download as fetch_corpus  # the network, only when asked

        fetch_corpus(name, directory, sources={name: source})
    elif missing:
        raise DataError(f"corpus {name!r}: {directory} has no {', '.join(missing)}; download with: "
                        f"{command(name, directory)} (or set data.download=true)")
    return load_files(name, directory, source.files, cache_dir, vocab_size, size)
