import functools
import hashlib
import http.server
import random
import threading

import pytest
import torch

from lrscan.pipeline.errors import LrscanError
from lrscan.pipeline.train.data import (
    NAMES_SHA256,
    Vocab,
    build_dataset,
    fetch_names,
    find_names,
    load_splits,
    read_words,
    split_words,
)


def test_vocab_and_context_windows_follow_the_lecture():
    vocab = Vocab.from_words(["emma", "ava"])
    assert vocab.itos == (".", "a", "e", "m", "v") and vocab.stoi["."] == 0
    X, Y = build_dataset(["emma"], vocab, block_size=3)
    s = vocab.stoi
    assert X.tolist() == [[0, 0, 0], [0, 0, s["e"]], [0, s["e"], s["m"]], [s["e"], s["m"], s["m"]],
                          [s["m"], s["m"], s["a"]]]
    assert Y.tolist() == [s["e"], s["m"], s["m"], s["a"], 0]
    assert X.dtype == torch.long and X.shape == (5, 3)


def test_split_is_the_lectures_80_10_10(words_file):
    words = read_words(words_file)
    tr, dev, te = split_words(words, 42)
    shuffled = list(words)
    random.seed(42)
    random.shuffle(shuffled)  # the lecture: random.seed(42); random.shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    assert (tr, dev, te) == (shuffled[:n1], shuffled[n1:n2], shuffled[n2:])


def test_load_splits_counts(words_file):
    sp = load_splits(words_file, 3, 42)
    words = read_words(words_file)
    assert sum(sp.n_words) == len(words) and sp.n_words[0] == int(0.8 * len(words))
    # one example per character plus the end marker
    tr, _, _ = split_words(words, 42)
    assert sp.train[0].shape[0] == sum(len(w) + 1 for w in tr)


def test_real_names_file(real_names):
    assert hashlib.sha256(real_names.read_bytes()).hexdigest() == NAMES_SHA256
    sp = load_splits(real_names, 3, 42)
    assert sum(sp.n_words) == 32033 and len(sp.vocab) == 27
    # the lecture's sizes: Xtr 182625, Xdev 22655, Xte 22866
    assert (sp.train[0].shape[0], sp.dev[0].shape[0], sp.test[0].shape[0]) == (182625, 22655, 22866)


@pytest.mark.parametrize("content, fragment", [
    (b"", "is empty"),
    (b"\n\n", "is empty"),
    (b"anna\n\nbob\n" + b"x\n" * 20, "line 2: empty word"),
    (b"an.na\n" + b"x\n" * 20, "contains '.'"),
    (b"\xff\xfe bad\n", "not UTF-8"),
    (b"a\nb\nc\n", "need at least 10"),
])
def test_bad_data_gets_one_clear_error(tmp_path, content, fragment):
    p = tmp_path / "w.txt"
    p.write_bytes(content)
    with pytest.raises(LrscanError) as e:
        load_splits(p, 3, 42)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_missing_file_says_what_works_outside_the_repository(tmp_path):
    with pytest.raises(LrscanError, match="does not exist") as e:
        load_splits(tmp_path / "nope.txt", 3, 42)
    assert "make data" not in str(e.value) and "python -m lrscan.pipeline.train.data fetch" in str(e.value)


def test_character_outside_the_training_vocabulary(tmp_path):
    words = ["ab"] * 40
    p = tmp_path / "w.txt"
    # find a split seed that puts the odd word outside the training split
    for seed in range(100):
        tr, dev, te = split_words(words[:-1] + ["zq"], seed)
        if "zq" not in tr:
            break
    p.write_text("\n".join(words[:-1] + ["zq"]))
    with pytest.raises(LrscanError, match="has character\\(s\\) 'qz' that no training word has"):
        load_splits(p, 3, seed)


def test_fetch_copies_from_shared_and_checks_sha(tmp_path, real_names):
    dest = tmp_path / "d" / "names.txt"
    assert fetch_names(dest, real_names.parent) == str(real_names)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == NAMES_SHA256
    assert fetch_names(dest, real_names.parent) == "present"


def test_fetch_refuses_a_wrong_file(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "names.txt").write_text("not the names\n")
    dest = tmp_path / "names.txt"
    with pytest.raises(LrscanError, match="does not match"):
        fetch_names(dest, shared, url="file:///nonexistent")
    assert not dest.exists() and not list(tmp_path.glob(".names-*"))


@pytest.fixture
def served(tmp_path):
    """A real HTTP server on loopback serving tmp_path/www; yields the folder and its base URL."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


DEAD_URL = "http://127.0.0.1:9/names.txt"  # the discard port: nothing listens, the connection is refused at once


def test_find_names_downloads_into_the_cache_once_and_checks_it(tmp_path, served, real_names):
    www, url = served
    (www / "names.txt").write_bytes(real_names.read_bytes())
    cache = tmp_path / "cache" / "lrscan" / "names.txt"
    assert find_names("", cache, url=f"{url}/names.txt") == str(cache)
    assert hashlib.sha256(cache.read_bytes()).hexdigest() == NAMES_SHA256
    # the next time it is found in the cache: nothing is downloaded
    assert find_names("", cache, url=DEAD_URL) == str(cache)


def test_find_names_refuses_a_download_that_is_not_makemores_file(tmp_path, served):
    www, url = served
    (www / "names.txt").write_text("emma\nolivia\n")
    cache = tmp_path / "cache" / "names.txt"
    with pytest.raises(LrscanError, match="does not match makemore's names.txt"):
        find_names("", cache, url=f"{url}/names.txt")
    assert not cache.exists()


def test_find_names_offline_says_the_three_ways_to_provide_it(tmp_path):
    cache = tmp_path / "cache" / "names.txt"
    with pytest.raises(LrscanError) as err:
        find_names("", cache, url=DEAD_URL)
    message = str(err.value)
    assert "--data=PATH" in message and "LRSCAN_DATA=PATH" in message and str(cache) in message
    assert "\n" not in message and not cache.exists()


def test_find_names_takes_the_given_file_first(tmp_path, words_file):
    assert find_names(str(words_file), tmp_path / "unused.txt", url=DEAD_URL) == str(words_file)
    with pytest.raises(LrscanError, match="does not exist"):
        find_names(str(tmp_path / "missing.txt"), tmp_path / "unused.txt", url=DEAD_URL)


def test_array_build_equals_the_lectures_loop(words_file):
    words = read_words(words_file)
    vocab = Vocab.from_words(words)
    for block_size in (1, 3, 8):
        X, Y = build_dataset(words, vocab, block_size)
        # the lecture's loop, verbatim in spirit
        Xs, Ys = [], []
        for w in words:
            context = [0] * block_size
            for ch in w + ".":
                ix = vocab.stoi[ch]
                Xs.append(context)
                Ys.append(ix)
                context = context[1:] + [ix]
        assert X.tolist() == Xs and Y.tolist() == Ys and X.dtype == Y.dtype == torch.long
