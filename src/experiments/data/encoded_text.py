"""The path both text datasets take (IMDB, a CSV of one's own): texts encoded once into a settings-keyed cache,
which `fetch` builds and `load` reads, and new texts encoded with the same vocabulary for predictions."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import torch

from experiments.core.rules import integer, require
from experiments.data.cache import SettingsCache
from experiments.data.downloaded import DownloadedDataModule, Split
from experiments.data.text import PAD, encode, tokenize

# Longer than any IMDB review (about 3,000 tokens at most); a typo like seq_len=400000 would allocate gigabytes.
MAX_SEQ_LEN = 10_000


class EncodedTextDataModule(DownloadedDataModule):
    """A subclass names its `cache_folder` under `data_dir`, calls `encoded_by(settings, num_classes)` when it is
    built, with every setting of its own that shapes its encoding (they name the cache file, with `vocab_size`,
    `min_freq` and `seq_len`, which every text dataset takes), and gives `_encode()`: {"vocabulary", "splits"}
    (text.encode_splits)."""

    cache_folder: str

    def __init__(
        self, *, batch_size: int = 64, vocab_size: int = 20000, min_freq: int = 2, seq_len: int = 400, **common
    ) -> None:
        super().__init__(batch_size=batch_size, **common)
        require(
            "data",
            vocab_size=(vocab_size, integer(3)),  # <pad>, <unk> and at least one word
            min_freq=(min_freq, integer(1)),
            seq_len=(seq_len, integer(1, MAX_SEQ_LEN)),
        )
        self.encoding = {"vocab_size": vocab_size, "min_freq": min_freq, "seq_len": seq_len}

    def encoded_by(self, settings: dict, num_classes: int) -> None:
        settings = self.settings = {**settings, **self.encoding}
        self.cache = SettingsCache(self.root / self.cache_folder, "encoded", settings)
        # The embedding table has `vocab_size` rows; a smaller vocabulary leaves some unused.
        self.spec = {
            "kind": "text",
            "vocab_size": settings["vocab_size"],
            "pad_index": PAD,
            "seq_len": settings["seq_len"],
            "num_classes": num_classes,
        }

    @property
    def cache_path(self) -> Path:
        return self.cache.path

    @abstractmethod
    def _encode(self) -> dict:
        """The vocabulary and the three splits as token ids; the vocabulary from the training part alone."""

    def fetch(self) -> None:
        if not self.cache.path.exists():
            self.cache.write(self._encode())

    def load(self) -> dict[str, Split]:
        cache = self.cache.read() or self.cache.write(self._encode())  # an unusable cache is built again
        self.vocabulary = cache["vocabulary"]
        return cache["splits"]

    def encode_inputs(self, items: list[str]) -> torch.Tensor:
        """New texts as token ids, with the run's own vocabulary (from its cache)."""
        self.setup("predict")
        return encode([tokenize(text) for text in items], self.vocabulary, self.settings["seq_len"])
