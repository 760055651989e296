"""The contract every downloaded dataset shares (fetch, load, a validation part carved off, damaged files
fetched afresh), the settings-keyed cache, and the data keys every dataset config takes."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import lightning as L
import pytest
import torch

from experiments.core.build import build
from experiments.core.config import compose, validate
from experiments.core.errors import UserError
from experiments.data import DigitsDataModule, IMDBDataModule
from experiments.data.cache import SettingsCache
from experiments.data.downloaded import DownloadedDataModule
from experiments.data.files import DamagedFile
from experiments.data.in_memory import split_off

ORIGINAL = bytes(range(100))


class Tiny(DownloadedDataModule):
    """One 100-byte file: bytes 0..79 the training images, 80..99 the test images, parity the label."""

    spec = {"kind": "image", "shape": [1, 1, 1], "num_classes": 2}

    def __init__(self, *, with_val: bool = False, **common) -> None:
        super().__init__(**common)
        self.with_val = with_val
        self.file = self.root / "tiny.bin"
        self.downloads = self.loads = 0

    def fetch(self) -> None:
        if self.file.exists():
            return
        if not self.download:
            raise UserError(f"{self.file} not found and data.download=false")
        self.downloads += 1
        self.file.parent.mkdir(parents=True, exist_ok=True)
        self.file.write_bytes(ORIGINAL)

    def load(self) -> dict:
        self.loads += 1
        data = self.file.read_bytes()
        if len(data) != len(ORIGINAL):
            raise DamagedFile(f"{self.file} is truncated", self.file)
        x = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, 1, 1, 1)
        y = x.view(-1).long() % 2
        splits = {"train": (x[:80], y[:80]), "test": (x[80:], y[80:])}
        if self.with_val:
            splits["val"] = (x[:5], y[:5])
        return splits


def test_val_is_carved_off_train_reproducibly_and_independently_of_seed(tmp_path):
    data = Tiny(data_dir=str(tmp_path), val_size=0.25, split_seed=3, seed=1)
    data.setup()
    assert [len(data.splits[name][1]) for name in ("train", "val", "test")] == [60, 20, 20]
    x = torch.arange(80, dtype=torch.uint8).view(-1, 1, 1, 1)
    (train, val) = split_off(x, x.view(-1).long() % 2, 0.25, 3)
    assert torch.equal(data.splits["train"][0], train[0]) and torch.equal(data.splits["val"][0], val[0])
    other_seed = Tiny(data_dir=str(tmp_path), val_size=0.25, split_seed=3, seed=2)
    other_seed.setup()
    assert torch.equal(other_seed.splits["val"][0], data.splits["val"][0])  # the training seed moves nothing
    other_split = Tiny(data_dir=str(tmp_path), val_size=0.25, split_seed=4)
    other_split.setup()
    assert not torch.equal(other_split.splits["val"][0], data.splits["val"][0])


def test_a_val_split_that_load_returns_is_kept(tmp_path):
    data = Tiny(data_dir=str(tmp_path), with_val=True, val_size=0.5)
    data.setup()
    assert list(data.splits) == ["train", "val", "test"]
    assert len(data.splits["train"][1]) == 80 and data.splits["val"][0].view(-1).tolist() == [0, 1, 2, 3, 4]


def test_files_are_fetched_once_and_setup_loads_once(tmp_path):
    data = Tiny(data_dir=str(tmp_path))
    data.prepare_data()
    data.setup()
    data.setup("test")
    assert (data.downloads, data.loads) == (1, 1)
    again = Tiny(data_dir=str(tmp_path))  # the next run finds the files
    again.setup()
    assert again.downloads == 0


def test_a_damaged_file_is_fetched_afresh_while_downloads_are_on(tmp_path):
    (tmp_path / "tiny.bin").write_bytes(ORIGINAL[:50])
    data = Tiny(data_dir=str(tmp_path))
    data.setup()
    assert data.downloads == 1 and (tmp_path / "tiny.bin").read_bytes() == ORIGINAL
    assert len(data.splits["test"][1]) == 20


def test_a_damaged_file_is_refused_and_kept_while_downloads_are_off(tmp_path):
    (tmp_path / "tiny.bin").write_bytes(ORIGINAL[:50])
    data = Tiny(data_dir=str(tmp_path), download=False)
    with pytest.raises(UserError, match=r"is truncated; delete it, or allow data\.download, to get a fresh copy$"):
        data.setup()
    assert data.splits == {} and (tmp_path / "tiny.bin").read_bytes() == ORIGINAL[:50]


# The settings-keyed cache.

SETTINGS = {"format": 1, "size": 8}


def contents() -> dict:
    return {"names": ["a", "b"], "splits": {"train": (torch.arange(4), torch.zeros(4))}}


def test_cache_file_is_named_after_the_sha1_of_its_settings(tmp_path):
    cache = SettingsCache(tmp_path / "folder", "decoded", SETTINGS)
    key = hashlib.sha1(json.dumps(SETTINGS, sort_keys=True).encode()).hexdigest()[:12]
    assert cache.path == tmp_path / "folder" / f"decoded-{key}.pt"
    assert SettingsCache(tmp_path, "decoded", {"size": 8, "format": 1}).path.name == cache.path.name  # key order
    assert SettingsCache(tmp_path, "decoded", {**SETTINGS, "size": 9}).path.name != cache.path.name


def test_imdb_cache_names_stay_those_of_existing_caches(tmp_path):
    # Pinned: a cache built before stays valid; a change here makes every user encode IMDB again.
    assert IMDBDataModule(data_dir=str(tmp_path), seq_len=64).cache_path == (
        tmp_path / "aclImdb_cache" / "encoded-44419864a25a.pt"
    )


def test_cache_written_is_read_back_with_its_settings(tmp_path):
    cache = SettingsCache(tmp_path / "folder", "decoded", SETTINGS)
    cache.write(contents())
    read = cache.read()
    assert read["settings"] == SETTINGS and read["names"] == ["a", "b"]
    assert torch.equal(read["splits"]["train"][0], torch.arange(4))


@pytest.mark.parametrize(
    ("spoil", "warning"),
    [
        pytest.param(lambda path: torch.save({"settings": {"format": 0}}, path), "other settings", id="other settings"),
        pytest.param(lambda path: path.write_bytes(path.read_bytes()[:100]), "is unreadable", id="truncated"),
        pytest.param(lambda path: path.write_bytes(b"not a cache"), "is unreadable", id="garbage"),
    ],
)
def test_an_unusable_cache_is_built_again_with_a_warning(tmp_path, caplog, spoil, warning):
    cache = SettingsCache(tmp_path, "decoded", SETTINGS)
    cache.write(contents())
    spoil(cache.path)
    with caplog.at_level(logging.WARNING, logger="experiments.data.cache"):
        assert cache.read() is None
    assert f"{cache.path} " in caplog.text and warning in caplog.text and "building it again" in caplog.text
    assert cache.write({"names": ["fresh"]})["settings"] == SETTINGS and cache.read()["names"] == ["fresh"]


def test_a_cache_write_that_stops_halfway_leaves_the_old_file(tmp_path, monkeypatch):
    cache = SettingsCache(tmp_path, "decoded", SETTINGS)
    cache.write(contents())
    before = cache.path.read_bytes()

    def half_save(obj, path: Path) -> None:
        Path(path).write_bytes(b"half a fi")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        cache.write({"names": ["new"]})
    assert cache.path.read_bytes() == before and list(tmp_path.iterdir()) == [cache.path]  # no .part left


# Every dataset config takes the same data keys; those that download something, `download` too.

COMMON_KEYS = {"data_dir", "batch_size", "val_size", "split_seed", "seed"}


@pytest.mark.parametrize("name", ["mnist", "cifar10", "imdb", "digits"])
def test_every_dataset_composes_with_the_common_keys_overridden(tmp_path, name):
    downloads = name != "digits"
    cfg = compose([f"data={name}", f"data.data_dir={tmp_path}", *(["data.download=false"] if downloads else [])])
    validate(cfg)
    assert set(cfg.data) >= COMMON_KEYS and ("download" in cfg.data) == downloads
    data = build(cfg.data, "data", L.LightningDataModule)  # built, not set up: nothing is read or fetched
    assert data.batch_size == cfg.data.batch_size and data.seed == cfg.seed
    if downloads:
        assert data.root == tmp_path and data.download is False
    else:  # a setting it would ignore is refused, not accepted and ignored
        with pytest.raises(UserError, match=r"^data: DigitsDataModule got an unexpected keyword argument 'download'"):
            build({**cfg.data, "download": False}, "data", L.LightningDataModule)
    assert list(tmp_path.iterdir()) == []


def test_digits_splits_follow_seed_unless_split_seed_fixes_them():
    def test_labels(**keys) -> torch.Tensor:
        data = DigitsDataModule(**keys)
        data.setup()
        return data.splits["test"][1]

    assert torch.equal(test_labels(seed=5), test_labels(seed=0, split_seed=5))
    assert torch.equal(test_labels(seed=1, split_seed=7), test_labels(seed=2, split_seed=7))
    assert compose(["data=digits", "seed=3"]).data.split_seed == 3  # the config's default: the splits of today
