"""IMDB movie reviews (Maas et al., 2011): tokenised once, encoded as padded token ids, cached by settings.

The official archive is downloaded and checked (md5), or an already extracted `data_dir/aclImdb/` is
used as it is. The vocabulary comes from the training reviews only (the validation part carved from
them excluded). Encoding 50,000 reviews takes a while in Python, so the result is cached in
`data_dir/aclImdb_cache/`, under a name derived from every setting that shapes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
from collections import Counter
from pathlib import Path

import torch

from experiments.atomic import written_atomically
from experiments.data.files import extract_tar, fetch_or_explain, refetching_damaged
from experiments.data.in_memory import InMemoryDataModule, carve
from experiments.errors import UserError

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
PAD, UNKNOWN = 0, 1
CACHE_FORMAT = 1  # bump when tokenisation or encoding changes, so old caches are not reused

log = logging.getLogger(__name__)

# A regular expression of our own rather than a tokenizer library: reviews need lower-casing, the
# <br /> tags dropped and words split from punctuation, which is one line and no extra dependency.
_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower().replace("<br />", " "))


def read_split(folder: Path) -> tuple[list[str], list[int]]:
    """`folder/{neg,pos}/<id>_<rating>.txt` -> texts and labels (neg 0, pos 1), in a fixed order."""
    texts, labels = [], []
    for label, sentiment in enumerate(("neg", "pos")):
        files = sorted((folder / sentiment).glob("*.txt"))
        if not files:
            raise UserError(f"IMDB: no reviews in {folder / sentiment}; delete {folder.parent} to download it again")
        for path in files:
            texts.append(path.read_text(encoding="utf-8"))
            labels.append(label)
    return texts, labels


def build_vocabulary(token_lists: list[list[str]], size: int, min_freq: int) -> list[str]:
    counts = Counter(token for tokens in token_lists for token in tokens)
    common = [token for token, count in counts.most_common(size - 2) if count >= min_freq]
    return ["<pad>", "<unk>", *common]


def encode(token_lists: list[list[str]], vocabulary: list[str], seq_len: int) -> torch.Tensor:
    """Token ids, truncated to the first `seq_len` tokens and right-padded with PAD."""
    index = {token: i for i, token in enumerate(vocabulary)}
    ids = torch.full((len(token_lists), seq_len), PAD, dtype=torch.int32)
    for row, tokens in enumerate(token_lists):
        encoded = [index.get(token, UNKNOWN) for token in tokens[:seq_len]]
        ids[row, : len(encoded)] = torch.tensor(encoded, dtype=torch.int32)
    return ids


class IMDBDataModule(InMemoryDataModule):
    """25,000 training reviews (minus a validation part carved with `split_seed`), 25,000 test reviews."""

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = True,
        batch_size: int = 64,
        val_size: float = 0.1,
        split_seed: int = 0,
        vocab_size: int = 20000,
        min_freq: int = 2,
        seq_len: int = 400,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed)
        self.root = Path(data_dir)
        self.download, self.val_size, self.split_seed = download, val_size, split_seed
        self.settings = {
            "format": CACHE_FORMAT,
            "val_size": val_size,
            "split_seed": split_seed,
            "vocab_size": vocab_size,
            "min_freq": min_freq,
            "seq_len": seq_len,
        }
        # The embedding table has `vocab_size` rows; a smaller vocabulary leaves some unused.
        self.spec = {"kind": "text", "vocab_size": vocab_size, "pad_index": PAD, "seq_len": seq_len, "num_classes": 2}

    @property
    def cache_path(self) -> Path:
        key = hashlib.sha1(json.dumps(self.settings, sort_keys=True).encode()).hexdigest()[:12]
        return self.root / "aclImdb_cache" / f"encoded-{key}.pt"

    def prepare_data(self) -> None:
        if self.cache_path.exists():
            return
        reviews = self.root / "aclImdb"
        if not reviews.is_dir():
            refetching_damaged(self._fetch_and_unpack, self.download)
        self._encode_and_cache(reviews)

    def _fetch_and_unpack(self) -> None:
        archive = self.root / Path(URL).name
        if not archive.exists():
            fetch_or_explain("IMDB", [URL], archive, MD5, self.download, [archive.name, "or aclImdb/"])
        extract_tar(archive, self.root, "aclImdb")

    def _read_cache(self) -> dict | None:
        """The cached encoding, or None when it is unreadable or was built with other settings: a cache is
        derived data, so the safe recovery is to build it again, never to use it or to stop."""
        try:
            cache = torch.load(self.cache_path, weights_only=True)  # tensors, strings and numbers only
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
            log.warning("%s is unreadable (%s); building it again", self.cache_path, str(error).splitlines()[0])
            return None
        if not isinstance(cache, dict) or cache.get("settings") != self.settings:
            log.warning("%s was built with other settings; building it again", self.cache_path)
            return None
        return cache

    def _encode_and_cache(self, reviews: Path) -> None:
        train_texts, train_labels = read_split(reviews / "train")
        test_texts, test_labels = read_split(reviews / "test")
        train_rows, val_rows = carve(len(train_texts), self.val_size, self.split_seed)
        texts = {
            "train": [train_texts[i] for i in train_rows],
            "val": [train_texts[i] for i in val_rows],
            "test": test_texts,
        }
        labels = {
            "train": [train_labels[i] for i in train_rows],
            "val": [train_labels[i] for i in val_rows],
            "test": test_labels,
        }
        tokens = {name: [tokenize(text) for text in split] for name, split in texts.items()}
        vocabulary = build_vocabulary(tokens["train"], self.settings["vocab_size"], self.settings["min_freq"])
        splits = {
            name: (encode(tokens[name], vocabulary, self.settings["seq_len"]), torch.tensor(labels[name]))
            for name in tokens
        }
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with written_atomically(self.cache_path) as temporary:
            torch.save({"settings": self.settings, "vocabulary": vocabulary, "splits": splits}, temporary)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()  # a no-op once the cache is there; lets setup() work without a Trainer
        cache = self._read_cache()
        if cache is None:
            self.cache_path.unlink()
            self.prepare_data()
            cache = self._read_cache()
        self.vocabulary = cache["vocabulary"]
        self.splits = cache["splits"]
