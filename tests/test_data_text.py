"""Directories of train/valid/test text files (``text``, ``ptb``, ``wikitext2``), and the data configs."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest
import yaml

from benchmark.data import DataError, load_corpus
from benchmark.data.corpus import EOS, UNK

ROOT = Path(__file__).resolve().parent.parent


def write_splits(directory: Path, names=("train.txt", "valid.txt", "test.txt"),
                 texts=("a b c\nb c\n\nc a <unk>\n", "a b z\n", "c c\n")) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in zip(names, texts):
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def words(c, split):
    return [c.itos[i] for i in getattr(c, split).tolist()]


def test_lines_are_whitespace_split_with_eos_and_vocab_from_train(tmp_path):
    c = load_corpus("text", path=write_splits(tmp_path))
    assert words(c, "train") == ["a", "b", "c", EOS, "b", "c", EOS, EOS, "c", "a", UNK, EOS]
    assert words(c, "valid") == ["a", "b", UNK, EOS]  # z is not in the training file
    assert words(c, "test") == ["c", "c", EOS]
    assert c.itos == (EOS, UNK, "c", "a", "b")  # by training frequency, ties alphabetical
    assert c.bayes_valid_ppl is None and c.bayes_test_ppl is None


def test_file_names_size_and_vocab_cap_are_options(tmp_path):
    d = write_splits(tmp_path, names=("tr.tok", "va.tok", "te.tok"))
    c = load_corpus("text", path=d, train_file="tr.tok", valid_file="va.tok", test_file="te.tok", vocab_size=3)
    assert c.itos == (EOS, UNK, "c") and words(c, "valid") == [UNK, UNK, UNK, EOS]
    (d / "tr.tok").write_text("x y\n" * 100)
    c = load_corpus("text", path=d, train_file="tr.tok", valid_file="va.tok", test_file="te.tok", size=150)
    assert len(c.train) == 150


def test_missing_split_is_a_one_line_error_naming_it(tmp_path):
    d = write_splits(tmp_path)
    (d / "valid.txt").unlink()
    with pytest.raises(DataError) as e:
        load_corpus("text", path=d)
    msg = str(e.value)
    assert "\n" not in msg and "valid.txt" in msg and str(d) in msg and "has no valid.txt (" in msg


@pytest.mark.parametrize("split, text, what", [
    ("train", "\n\n\n", "holds no words, only empty lines"),  # trained on <eos> alone, it ended "diverged"
    ("valid", "", "is empty"),
    ("test", "\n", "holds no words, only empty lines"),
])
def test_a_split_without_words_is_refused_naming_the_split_and_its_file(tmp_path, split, text, what):
    """Issue 26: "a split in DIR is empty" named neither which split nor why."""
    d = write_splits(tmp_path)
    (d / f"{split}.txt").write_text(text)
    with pytest.raises(DataError) as e:
        load_corpus("text", path=d)
    assert str(e.value) == f"corpus 'text': the {split} split ({d / f'{split}.txt'}) {what}; every split needs text"


def test_a_path_that_is_missing_or_a_file_says_so(tmp_path):
    with pytest.raises(DataError) as e:
        load_corpus("text", path=tmp_path / "nowhere")
    assert str(e.value) == (f"corpus 'text': data.path={tmp_path / 'nowhere'} does not exist; give the directory "
                            f"that holds train.txt, valid.txt, test.txt")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(DataError) as e:
        load_corpus("text", path=tmp_path / "a-file")
    assert str(e.value).startswith(f"corpus 'text': data.path={tmp_path / 'a-file'} is a file, not a directory")
    with pytest.raises(DataError) as e:  # a corpus that can be fetched says how
        load_corpus("ptb", path=tmp_path / "nowhere")
    assert "does not exist" in str(e.value) and "python -m benchmark.data.download ptb" in str(e.value)


def test_a_file_that_is_not_utf8_is_a_one_line_error_naming_it(tmp_path):
    d = write_splits(tmp_path)
    (d / "train.txt").write_bytes("café olé\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        load_corpus("text", path=d, cache_dir=tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and str(d / "train.txt") in msg and "not UTF-8" in msg and "0xe9" in msg


def test_no_path_and_unknown_options_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="data.path=DIR"):
        load_corpus("text")
    with pytest.raises(DataError, match=r"no option data.pth; its options: path,") as e:
        load_corpus("text", pth=tmp_path)
    assert "\n" not in str(e.value)


def test_cache_is_keyed_by_file_contents(tmp_path):
    d, cache = write_splits(tmp_path / "d"), tmp_path / "cache"
    a = load_corpus("text", cache_dir=cache, path=d)
    (path,) = cache.glob("text-*.pt")
    stamp = path.stat().st_mtime_ns
    assert words(load_corpus("text", cache_dir=cache, path=d), "train") == words(a, "train")
    assert path.stat().st_mtime_ns == stamp, "an unchanged directory must be read from the cache"
    # Edit the test file in place, keeping its size and even its modification time.
    st = os.stat(d / "test.txt")
    (d / "test.txt").write_text("a b\n")
    os.utime(d / "test.txt", ns=(st.st_atime_ns, st.st_mtime_ns))
    b = load_corpus("text", cache_dir=cache, path=d)
    assert words(b, "test") == ["a", "b", EOS]
    assert len(list(cache.glob("text-*.pt"))) == 2


def test_ptb_reads_a_local_directory_uncapped(tmp_path, cache_dir):
    train = " ".join(f"w{i}" for i in range(12_000)) + " <unk>\n"
    write_splits(tmp_path, names=("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"), texts=(train, "w1 w2\n", "w3\n"))
    c = load_corpus("ptb", cache_dir=cache_dir, path=tmp_path)
    assert c.vocab_size == 12_002 and c.itos[:2] == (EOS, UNK)  # no cap unless asked
    assert load_corpus("ptb", cache_dir=cache_dir, path=tmp_path, vocab_size=100).vocab_size == 100


@pytest.mark.parametrize("yaml_file", sorted((ROOT / "conf" / "data").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_data_config_key_is_an_option_of_its_loader(yaml_file, tmp_path, cache_dir):
    """The runner calls load_corpus(cfg.data.name, cache_dir=..., **every other key)."""
    cfg = yaml.safe_load(yaml_file.read_text())
    name = cfg.pop("name")
    assert name == yaml_file.stem
    from benchmark.data import kjv, ptb, synthetic, textdir, wikitext

    loader = {"kjv": kjv.load, "ptb": ptb.load, "wikitext2": wikitext.load, "text": textdir.load,
              "synthetic": synthetic.load}[name]
    params = inspect.signature(loader).parameters
    assert set(cfg) <= set(params), f"{sorted(set(cfg) - set(params))} are not options of {name}"
    if "download" in cfg:
        assert cfg["download"] is False
    if name == "kjv":
        return
    if "path" in cfg:
        assert cfg["path"] is None
        files = {"ptb": ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
                 "wikitext2": ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens")}.get(name)
        write_splits(tmp_path, **({"names": files} if files else {}))
        cfg["path"] = str(tmp_path)
    if name == "synthetic":
        cfg.update(train_tokens=500, valid_tokens=200, test_tokens=200)
    c = load_corpus(name, cache_dir=cache_dir, **cfg)
    assert len(c.train) > 0 and c.name == name
