"""Any directory of train/valid/test text files, read the way Mikolov's PTB is read.

Why one reader for all: PTB (Mikolov et al. 2010/2011) and WikiText (Merity et al. 2016)
ship as three plain-text splits that are already tokenised, lower-cased (PTB) and capped
with ``<unk>`` written in the text, and every language-model paper since Zaremba et al.
(2014) reads them the same way: split each line on whitespace and append ``<eos>``.
Doing exactly that, and nothing more, is what makes perplexities comparable with the
literature; the same reader then serves any other corpus a user prepares that way.

The vocabulary comes from the training file only (words seen only in valid/test become
``<unk>``), optionally capped at ``vocab_size``. The cache key holds the SHA-256 of each
file, so a file edited in place is never read back stale from the cache.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from benchmark.data.corpus import EOS, Corpus, DataError, build_vocab, cached, check_has_words, encode

SPLITS = ("train", "valid", "test")
DEFAULT_FILES = ("train.txt", "valid.txt", "test.txt")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks (WikiText-103 is 500 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_words(path: Path) -> list[str]:
    """Whitespace-split words of every line, ``<eos>`` after each line (empty lines too).

    Empty lines count: WikiText's blank lines between paragraphs are ``<eos>`` tokens in
    Merity et al.'s own loader, which is where its published token counts come from.
    """
    words: list[str] = []
    try:
        with path.open(encoding="utf-8") as f:
            for line in f:
                words.extend(line.split())
                words.append(EOS)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (it holds byte 0x{e.object[e.start]:02x}); convert it first, "
                        f"e.g. iconv -f latin1 -t utf-8") from None
    return words


def resolve_dir(path: str | Path | None, corpus: str, hint: str) -> Path:
    """The data directory as a Path, or a one-line error when none was given."""
    if path is None or str(path) == "":
        raise DataError(f"corpus {corpus!r} needs data.path=DIR, the directory holding its files; {hint}")
    return Path(path).expanduser()


def split_paths(directory: Path, files: tuple[str, str, str]) -> list[Path]:
    return [directory / f for f in files]


def missing_files(directory: Path, files: tuple[str, str, str]) -> list[str]:
    return [f for f in files if not (directory / f).is_file()]


def check_directory(name: str, directory: Path, files: tuple[str, str, str], hint: str = "") -> None:
    """``data.path`` names a directory that exists, or one line that says what it is instead."""
    if not directory.exists():
        raise DataError(f"corpus {name!r}: data.path={directory} does not exist; give the directory that holds "
                        f"{', '.join(files)}" + (f", or {hint}" if hint else ""))
    if not directory.is_dir():
        raise DataError(f"corpus {name!r}: data.path={directory} is a file, not a directory; give the directory "
                        f"that holds {', '.join(files)}")


def load_files(name: str, directory: Path, files: tuple[str, str, str], cache_dir: Path | None,
               vocab_size: int | None, size: int | None) -> Corpus:
    """The corpus from three existing files; the shared core of ``text``, ``ptb`` and ``wikitext2``."""
    if vocab_size is not None and vocab_size < 3:
        raise DataError(f"data.vocab_size={vocab_size} is too small; it must be at least 3, or null for no cap")
    if size is not None and size < 100:
        raise DataError(f"data.size={size} is too small; use at least 100 tokens or null for the whole split")
    check_directory(name, directory, files)
    missing = missing_files(directory, files)
    if missing:
        raise DataError(f"corpus {name!r}: {directory} has no {', '.join(missing)} "
                        f"(expected the splits {', '.join(files)})")
    paths = split_paths(directory, files)

    def build() -> Corpus:
        train, valid, test = (read_words(p) for p in paths)
        if size is not None:
            train = train[:size]
        check_has_words(name, {split: (words, str(path)) for split, words, path
                               in zip(SPLITS, (train, valid, test), paths)})
        itos = build_vocab(train, vocab_size)
        return Corpus(name, encode(train, itos), encode(valid, itos), encode(test, itos), itos)

    key = {"files": dict(zip(SPLITS, files)), "sha256": [file_sha256(p) for p in paths],
           "vocab_size": vocab_size, "size": size}
    return cached(cache_dir, name, key, build)


def load(cache_dir: Path | None = None, path: str | Path | None = None, train_file: str = DEFAULT_FILES[0],
         valid_file: str = DEFAULT_FILES[1], test_file: str = DEFAULT_FILES[2], vocab_size: int | None = None,
         size: int | None = None) -> Corpus:
    """Corpus ``text``: the three files in ``path`` (``train.txt``, ``valid.txt``, ``test.txt`` by default).

    ``vocab_size`` caps the vocabulary built from the training file (None: no cap);
    ``size`` keeps a prefix of that many training tokens, as ``kjv`` does.
    """
    directory = resolve_dir(path, "text", "it must hold train/valid/test files (data.train_file etc.)")
    return load_files("text", directory, (train_file, valid_file, test_file), cache_dir, vocab_size, size)
