"""The word list: read and check it, build the vocabulary and the context windows, split 80/10/10.

Karpathy's pipeline: '.' (index 0) marks both the start and the end of a word, every character of
every word is one example whose input is the `block_size` characters before it.

Also a small command that puts the data file in place on a fresh machine:

    python -m pipeline.train.data fetch [DEST] [--shared DIR]

copies `names.txt` from the shared folder when it exists, else downloads makemore's file, and in
both cases checks its sha256 before moving it into place. An installed lrscan with no --data or
$LRSCAN_DATA keeps its copy in a per-user cache (`find_names`: ~/.cache/lrscan/names.txt).
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from lrscan.pipeline.config import missing_data_message
from lrscan.pipeline.errors import LrscanError, exit_with
from lrscan.pipeline.fsutil import atomic_write_bytes

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
SEPARATOR = "."  # start and end of a word; index 0


@dataclass(frozen=True)
class Vocab:
    itos: tuple[str, ...]  # index -> character; itos[0] is the separator

    @classmethod
    def from_words(cls, words: list[str]) -> Vocab:
        return cls((SEPARATOR, *sorted(set("".join(words)))))

    @property
    def stoi(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)


@dataclass(frozen=True)
class Splits:
    vocab: Vocab
    train: tuple[torch.Tensor, torch.Tensor]  # X (n, block_size) int64, Y (n,) int64
    dev: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    n_words: tuple[int, int, int]


def read_words(path: str | os.PathLike) -> list[str]:
    """The words of a one-word-per-line file, with the checks a bad file needs."""
    p = Path(path)
    if not p.exists():
        raise LrscanError(missing_data_message(str(p)))
    if not p.is_file():
        raise LrscanError(f"data file {str(p)!r} is not a file")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise LrscanError(f"data file {str(p)!r} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    lines = text.splitlines()
    if not lines or not text.strip():
        raise LrscanError(f"data file {str(p)!r} is empty")
    words = []
    for lineno, line in enumerate(lines, start=1):
        w = line.strip()
        if not w:
            raise LrscanError(f"data file {str(p)!r}, line {lineno}: empty word (words must be at least 1 character)")
        if SEPARATOR in w:
            raise LrscanError(f"data file {str(p)!r}, line {lineno}: {w!r} contains {SEPARATOR!r}, "
                              f"which marks word ends")
        words.append(w)
    return words


def build_dataset(words: list[str], vocab: Vocab, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """X (n, block_size): the `block_size` characters before each target; Y (n,): the target.

    The lecture's loop (`context = context[1:] + [ix]` per character) done with whole arrays: each
    word is laid out as `block_size` separators, its characters and the end separator, and X is a
    sliding window over that layout. Same result, ~20x faster on names.txt (it runs in every run).
    """
    stoi = vocab.stoi
    lengths = np.fromiter((len(w) + 1 for w in words), dtype=np.int64, count=len(words))  # targets per word
    Y = np.fromiter((stoi[c] for w in words for c in w + SEPARATOR), dtype=np.int64, count=int(lengths.sum()))
    word_of = np.repeat(np.arange(len(words)), lengths)
    at = np.arange(len(Y)) + block_size * (word_of + 1)  # each target's place in the padded layout
    padded = np.zeros(len(Y) + block_size * len(words), dtype=np.int64)
    padded[at] = Y
    X = sliding_window_view(padded, block_size)[at - block_size]  # (n, block_size)
    return torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(Y)


def split_words(words: list[str], split_seed: int) -> tuple[list[str], list[str], list[str]]:
    # the lecture's split: random.seed(42); random.shuffle(words); 80% / 10% / 10%
    words = list(words)
    random.Random(split_seed).shuffle(words)
    n1, n2 = int(0.8 * len(words)), int(0.9 * len(words))
    return words[:n1], words[n1:n2], words[n2:]


def load_splits(path: str | os.PathLike, block_size: int, split_seed: int) -> Splits:
    words = read_words(path)
    if len(words) < 10:
        raise LrscanError(f"data file {str(path)!r} has {len(words)} words: need at least 10 for an 80/10/10 split")
    train, dev, test = split_words(words, split_seed)
    # the model can only embed what it saw in training
    vocab = Vocab.from_words(train)
    known = set(vocab.itos)
    for name, part in (("dev", dev), ("test", test)):
        for w in part:
            unknown = sorted(set(w) - known)
            if unknown:
                raise LrscanError(
                    f"data file {str(path)!r}: word {w!r} in the {name} split has character(s) {''.join(unknown)!r} "
                    f"that no training word has (vocabulary: {''.join(vocab.itos[1:])!r})"
                )
    return Splits(
        vocab=vocab,
        train=build_dataset(train, vocab, block_size),
        dev=build_dataset(dev, vocab, block_size),
        test=build_dataset(test, vocab, block_size),
        n_words=(len(train), len(dev), len(test)),
    )


# -- minibatches ------------------------------------------------------------------------------------

SAMPLING_BLOCK_STEPS = 1024  # minibatch indices are drawn per block of steps from a generator seeded by (seed, block)


def batch_indices(seed: int, start_step: int, n_steps: int, n_train: int, batch_size: int,
                  block_steps: int = SAMPLING_BLOCK_STEPS) -> torch.Tensor:
    """Minibatch row indices for steps [start_step, start_step + n_steps): (n_steps, batch_size) int64.

    Each block of `block_steps` steps has its own generator seeded from (seed, block), so the batches of
    a step do not depend on where the run started: a resumed run sees exactly the batches it would have.
    """
    out = []
    step, end = start_step, start_step + n_steps
    while step < end:
        block = step // block_steps
        g = torch.Generator().manual_seed((seed * 1_000_003 + block) % (2**63 - 1))
        ix = torch.randint(0, n_train, (block_steps, batch_size), generator=g)  # (block_steps, B)
        lo = step - block * block_steps
        hi = min(end - block * block_steps, block_steps)
        out.append(ix[lo:hi])
        step += hi - lo
    return torch.cat(out)


# -- fetching the data file -----------------------------------------------------------------------


def sha256_of(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def fetch_names(dest: str | os.PathLike, shared: str | os.PathLike | None = None, url: str = NAMES_URL) -> str:
    """Put makemore's names.txt at `dest`: copied from `shared` when it has it, else downloaded; sha256 checked.

    Returns where it came from. The file is written to a temporary name and renamed only once its
    checksum matches, so a failed download never leaves a half file behind.
    """
    dest = Path(dest)
    if dest.exists() and sha256_of(dest) == NAMES_SHA256:
        return "present"
    candidate = Path(shared) / "names.txt" if shared else None
    if candidate is not None and candidate.is_file():
        payload, origin = candidate.read_bytes(), str(candidate)
    else:
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                payload, origin = r.read(), url
        except OSError as e:
            raise LrscanError(f"cannot download {url}: {e}") from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != NAMES_SHA256:
        raise LrscanError(f"{origin}: sha256 {digest} does not match makemore's names.txt ({NAMES_SHA256})")
    atomic_write_bytes(dest, payload)
    return origin


def find_names(given: str, cache: Path, url: str = NAMES_URL) -> str:
    """The word list to train on: `given` (--data or $LRSCAN_DATA) when set, else the per-user cache's
    names.txt, else makemore's names.txt downloaded into the cache (sha256 checked).

    Offline with none of these: one LrscanError naming the three ways to provide it.
    """
    if given:
        if not Path(given).is_file():
            raise LrscanError(f"data file {given!r} does not exist")
        return given
    try:
        fetch_names(cache, url=url)
    except LrscanError as e:
        raise LrscanError(f"no word list: pass --data=PATH, set LRSCAN_DATA=PATH, or put makemore's names.txt at "
                          f"{cache} (downloading it there failed: {e})") from None
    return str(cache)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = "usage: python -m lrscan.pipeline.train.data fetch [DEST] [--shared DIR]"
    if not args or args[0] != "fetch":
        print(usage, file=sys.stderr)
        raise SystemExit(2)
    args = args[1:]
    shared = None
    if "--shared" in args:
        i = args.index("--shared")
        if i + 1 >= len(args):
            print(usage, file=sys.stderr)
            raise SystemExit(2)
        shared = args[i + 1]
        del args[i : i + 2]
    dest = args[0] if args else "data/names.txt"
    try:
        origin = fetch_names(dest, shared)
    except LrscanError as e:
        exit_with(e, "lrscan.pipeline.train.data")
    where = "already in place" if origin == "present" else "from " + origin
    print(f"{dest}: ok ({where}, sha256 {NAMES_SHA256[:12]}...)")


if __name__ == "__main__":
    main()
