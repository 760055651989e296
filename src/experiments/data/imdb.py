"""IMDB movie reviews (Maas et al., 2011): tokenised once, encoded as padded token ids, cached by settings.

The official archive is downloaded and checked (md5), or an already extracted `data_dir/aclImdb/` is
used as it is. The vocabulary comes from the training reviews only (the validation part carved from
them excluded). Encoding 50,000 reviews takes a while in Python, so the result is cached in
`data_dir/aclImdb_cache/`, under a name derived from every setting that shapes it.
"""

from __future__ import annotations

from pathlib import Path

from experiments.core.errors import UserError
from experiments.data.encoded_text import EncodedTextDataModule
from experiments.data.files import extract_tar, fetch_or_explain
from experiments.data.folds import validation_rows
from experiments.data.text import encode_splits

URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
CACHE_FORMAT = 1  # bump when tokenisation or encoding changes, so old caches are not reused


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


class IMDBDataModule(EncodedTextDataModule):
    """25,000 training reviews (minus a validation part carved with `split_seed`), 25,000 test reviews.

    The encoded splits, all three, are what `fetch` leaves on disk and `load` reads: the reviews
    themselves are needed only to build that cache.
    """

    class_names = ["negative", "positive"]
    cache_folder = "aclImdb_cache"

    def __init__(self, **settings) -> None:
        super().__init__(**settings)
        # Every setting of its own that shapes the encoding, and so names its cache file.
        splits = {"format": CACHE_FORMAT, "val_size": self.val_size, "split_seed": self.split_seed}
        if self.folds is not None:  # only then: caches made before folds keep their names
            splits |= {"folds": self.folds, "fold": self.fold}
        self.encoded_by(splits, num_classes=2)

    def _reviews(self) -> Path:
        """The extracted `aclImdb/` folder, downloaded and extracted first if it is not there."""
        reviews = self.root / "aclImdb"
        if not reviews.is_dir():
            archive = self.root / Path(URL).name
            if not archive.exists():
                fetch_or_explain("IMDB", [URL], archive, MD5, self.download, [archive.name, "or aclImdb/"])
            extract_tar(archive, self.root, "aclImdb")
        return reviews

    def _encode(self) -> dict:
        """The vocabulary and the three splits as token ids; the vocabulary from the training part alone."""
        reviews = self._reviews()
        train_texts, train_labels = read_split(reviews / "train")
        test_texts, test_labels = read_split(reviews / "test")
        train_rows, val_rows = validation_rows(train_labels, self.val_size, self.split_seed, self.folds, self.fold)
        parts = {"train": train_rows, "val": val_rows}
        texts = {name: [train_texts[i] for i in rows] for name, rows in parts.items()} | {"test": test_texts}
        labels = {name: [train_labels[i] for i in rows] for name, rows in parts.items()} | {"test": test_labels}
        settings = self.settings
        return encode_splits(texts, labels, settings["vocab_size"], settings["min_freq"], settings["seq_len"])
