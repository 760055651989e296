"""The path both text datasets take (IMDB, a CSV of one's own): texts encoded once into a settings-keyed cache,
which `fetch` builds and `load` reads, and new texts encoded with the same vocabulary for predictions."""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

import torch

from experiments.data.cache import SettingsCache
from experiments.data.downloaded import DownloadedDataModule, Split
from experiments.data.text import PAD, encode, tokenize


class EncodedTextDataModule(DownloadedDataModule):
    """A subclass names its `cache_folder` under `data_dir`, calls `encoded_by(settings, num_classes)` when it is
    built, with every setting that shapes its encoding (they name the cache file; `vocab_size` and `seq_len`
    among them), and gives `_encode()`: {"vocabulary", "splits"} (text.encode_splits)."""

    cache_folder: str

    def encoded_by(self, settings: dict, num_classes: int) -> None:
        self.settings = settings
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
