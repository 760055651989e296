"""Damaged and hostile data files, table-driven: each is refused in one line while downloads are off, and
replaced by a fresh, checksum-verified copy while they are on; bad data is never used. Downloads come
from a real HTTP server on 127.0.0.1 standing in for the official addresses."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import pickle
import struct
import tarfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10, MNIST

from experiments.core.errors import UserError
from experiments.data import CIFAR10DataModule, IMDBDataModule, MNISTDataModule
from experiments.data import files as data_files
from experiments.data import imdb as imdb_module
from tests import fixtures

MODULES = {"mnist": MNISTDataModule, "cifar10": CIFAR10DataModule, "imdb": IMDBDataModule}
WRITERS = {"mnist": fixtures.write_mnist, "cifar10": fixtures.write_cifar10, "imdb": fixtures.write_imdb}
RAW = Path("MNIST/raw")


def truncate(relative: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / relative
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    return damage


def garble(relative: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        path = root / relative
        path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))

    return damage


def idx_file(relative: str, header: bytes, body_bytes: int) -> Callable[[Path], None]:
    """An extracted IDX file (taken as already decompressed) with the given header."""

    def damage(root: Path) -> None:
        (root / relative).write_bytes(header + bytes(body_bytes))

    return damage


def cifar_archive(data: Callable[[np.ndarray], np.ndarray] = lambda d: d, drop: str = "") -> Callable[[Path], None]:
    """The CIFAR-10 fixture archive again, with each batch's pixel rows passed through `data`, or a member left out."""

    def damage(root: Path) -> None:
        archive = root / CIFAR10.filename
        with tarfile.open(archive) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        with tarfile.open(archive, "w:gz") as tar:
            for name, raw in members.items():
                if name.endswith(drop) and drop:
                    continue
                if "_batch" in name:
                    batch = pickle.loads(raw, encoding="bytes")
                    batch[b"data"] = data(batch[b"data"])
                    raw = pickle.dumps(batch, protocol=2)
                fixtures.add_file(tar, name, raw)

    return damage


def hostile_imdb(member: tarfile.TarInfo) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        with tarfile.open(root / "aclImdb_v1.tar.gz", "w:gz") as tar:
            fixtures.add_file(tar, "aclImdb/README", b"fine")
            tar.addfile(member, io.BytesIO(b"escaped") if member.isfile() else None)

    return damage


def link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def escaping_file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(b"escaped")
    return info


@dataclass
class Case:
    name: str
    dataset: str
    damage: Callable[[Path], None]
    message: str


CASES = [
    Case("mnist gzip truncated", "mnist", truncate(f"{RAW}/train-images-idx3-ubyte.gz"), "cannot decompress"),
    Case("mnist gzip garbled", "mnist", garble(f"{RAW}/t10k-labels-idx1-ubyte.gz"), "cannot decompress"),
    Case(
        "mnist IDX wrong magic",
        "mnist",
        idx_file(f"{RAW}/train-images-idx3-ubyte", struct.pack(">IIII", 2049, 600, 28, 28), 600 * 784),
        "is not an MNIST IDX file (its magic number is not 2051)",
    ),
    Case(
        "mnist IDX header promises more",
        "mnist",
        idx_file(f"{RAW}/t10k-labels-idx1-ubyte", struct.pack(">II", 2049, 200), 150),
        "its header promises 200 items of shape (), it holds 150 bytes of them",
    ),
    Case("cifar tar truncated", "cifar10", truncate(CIFAR10.filename), "cannot extract"),
    Case("cifar tar garbled", "cifar10", garble(CIFAR10.filename), "cannot extract"),
    Case("cifar member missing", "cifar10", cifar_archive(drop="test_batch"), "has no cifar-10-batches-py/test_batch"),
    Case(
        "cifar pickle wrong shape",
        "cifar10",
        cifar_archive(lambda d: np.ascontiguousarray(d[:, :1024])),
        "holds uint8 (100, 1024) data, not uint8 rows of 3x32x32 pixels",
    ),
    Case(
        "cifar pickle wrong dtype",
        "cifar10",
        cifar_archive(lambda d: d.astype(np.float64) / 255),
        "holds float64 (100, 3072) data",
    ),
    Case("imdb member escapes", "imdb", hostile_imdb(escaping_file("aclImdb/../../escaped.txt")), "is unsafe"),
    Case(
        "imdb symlink out",
        "imdb",
        hostile_imdb(link("aclImdb/passwd", tarfile.SYMTYPE, "/etc/passwd")),
        "cannot extract",
    ),
    Case(
        "imdb hardlink out",
        "imdb",
        hostile_imdb(link("aclImdb/passwd", tarfile.LNKTYPE, "/etc/passwd")),
        "cannot extract",
    ),
]


def module(dataset: str, root: Path, download: bool):
    extra = {"vocab_size": 100, "seq_len": 40} if dataset == "imdb" else {}
    return MODULES[dataset](data_dir=str(root), download=download, **extra)


def files_under(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    """The fixture datasets as 'the official files': what the local server hands out."""
    root = tmp_path_factory.mktemp("official")
    for write in WRITERS.values():
        write(root)
    return root


@pytest.fixture
def served(official, monkeypatch) -> list[str]:
    """A real HTTP server on 127.0.0.1 serving `official`, with the datasets' addresses and md5s pointed at it."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(official))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    requests: list[str] = []
    original_fetch = data_files.fetch
    monkeypatch.setattr(data_files, "fetch", lambda urls, *a: (requests.extend(urls), original_fetch(urls, *a))[1])
    md5 = {p.name: data_files.md5sum(p) for p in official.rglob("*.gz")}
    monkeypatch.setattr(MNIST, "mirrors", [f"{base}/MNIST/raw/"])
    monkeypatch.setattr(MNIST, "resources", [(name, md5[name]) for name, _ in MNIST.resources])
    monkeypatch.setattr(CIFAR10, "url", f"{base}/{CIFAR10.filename}")
    monkeypatch.setattr(CIFAR10, "tgz_md5", md5[CIFAR10.filename])
    monkeypatch.setattr(imdb_module, "URL", f"{base}/aclImdb_v1.tar.gz")
    monkeypatch.setattr(imdb_module, "MD5", md5["aclImdb_v1.tar.gz"])
    yield requests
    server.shutdown()


def loaded_from_official(dataset: str, official: Path, tmp_path: Path):
    copy = tmp_path / "reference"
    WRITERS[dataset](copy)
    data = module(dataset, copy, download=False)
    data.setup()
    return data.splits


# Float pixels compress slowly into the archive (seconds a case): that one in the full tier only.
CASE_PARAMS = [
    pytest.param(case, id=case.name, marks=pytest.mark.slow if "dtype" in case.name else ()) for case in CASES
]


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_damaged_file_is_refused_in_one_line_while_downloads_are_off(tmp_path, case):
    root = tmp_path / "data"
    WRITERS[case.dataset](root)
    case.damage(root)
    before = files_under(root)
    data = module(case.dataset, root, download=False)
    with pytest.raises(UserError) as error:
        data.setup()
    message = str(error.value)
    assert case.message in message and "\n" not in message
    assert message.endswith("; delete it, or allow data.download, to get a fresh copy")
    assert data.splits == {}  # nothing was used
    after = files_under(root)
    assert all(after.get(name) == md5 for name, md5 in before.items())  # the damaged file kept for the user to see
    assert not [name for name in after if name.endswith(".part") or name.startswith(".")]  # no half-written file
    with pytest.raises(UserError, match=r"; delete it, or allow data\.download"):  # nor on any later run
        module(case.dataset, root, download=False).setup()
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("case", CASE_PARAMS)
def test_damaged_file_is_replaced_by_a_fresh_download(tmp_path, served, official, case):
    root = tmp_path / "data"
    WRITERS[case.dataset](root)
    case.damage(root)
    data = module(case.dataset, root, download=True)
    data.setup()
    assert served, "it downloaded a fresh copy"
    reference = loaded_from_official(case.dataset, official, tmp_path)
    for split in ("train", "val", "test"):
        assert torch.equal(data.splits[split][0], reference[split][0])
        assert torch.equal(data.splits[split][1], reference[split][1])
    assert not (tmp_path / "escaped.txt").exists()


def test_extracted_folder_missing_a_batch_is_extracted_again(tmp_path, official):
    """Once an OSError traceback: a half-deleted cifar-10-batches-py/ beside its archive."""
    root = tmp_path / "data"
    fixtures.write_cifar10(root)
    CIFAR10DataModule(data_dir=str(root), download=False).prepare_data()
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    data = CIFAR10DataModule(data_dir=str(root), download=False)
    data.setup()
    reference = loaded_from_official("cifar10", official, tmp_path)
    assert torch.equal(data.splits["train"][0], reference["train"][0])
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no scratch folder left


def test_extracted_folder_missing_a_batch_without_archive_names_the_file(tmp_path):
    root = tmp_path / "data"
    fixtures.write_cifar10(root)
    CIFAR10DataModule(data_dir=str(root), download=False).prepare_data()
    (root / "cifar-10-python.tar.gz").unlink()
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UserError) as error:
        CIFAR10DataModule(data_dir=str(root), download=False).setup()
    assert str(error.value).startswith(
        f"CIFAR-10: cifar-10-python.tar.gz, or cifar-10-batches-py/data_batch_3 not found in {root} "
        "and data.download=false"
    )


def test_checksum_mismatch_on_download_keeps_nothing(tmp_path, served, monkeypatch):
    monkeypatch.setattr(CIFAR10, "tgz_md5", "0" * 32)
    root = tmp_path / "data"
    with pytest.raises(UserError) as error:
        CIFAR10DataModule(data_dir=str(root), download=True).setup()
    assert "the download failed" in str(error.value) and "checksum mismatch" in str(error.value)
    assert "\n" not in str(error.value)
    assert files_under(root) == {}


@pytest.mark.parametrize(
    "stale",
    [
        pytest.param(lambda path, cache: torch.save({**cache, "settings": {"format": 0}}, path), id="older settings"),
        pytest.param(lambda path, cache: path.write_bytes(path.read_bytes()[:1000]), id="truncated"),
        pytest.param(lambda path, cache: path.write_bytes(pickle.dumps(print, protocol=2)), id="pickled code"),
    ],
)
def test_unusable_imdb_cache_is_built_again(tmp_path, stale):
    root = tmp_path / "data"
    fixtures.write_imdb(root)
    first = module("imdb", root, download=False)
    first.setup()
    stale(first.cache_path, torch.load(first.cache_path, weights_only=True))
    again = module("imdb", root, download=False)
    again.setup()
    assert torch.equal(again.splits["train"][0], first.splits["train"][0])
    assert torch.load(again.cache_path, weights_only=True)["settings"] == first.settings


def crash_after(calls: int, original: Callable) -> Callable:
    """`original`, until the call after `calls`, which stops as if the process died there."""
    count = 0

    def maybe_crash(*args, **kwargs):
        nonlocal count
        count += 1
        if count > calls:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    return maybe_crash


def half_save(obj, path, save=torch.save) -> None:
    buffer = io.BytesIO()
    save(obj, buffer)
    Path(path).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("dataset", "target", "replacement", "looks_complete"),
    [
        ("mnist", "gzip.GzipFile.read", crash_after(3, gzip.GzipFile.read), f"{RAW}/train-images-idx3-ubyte"),
        ("cifar10", "tarfile.TarFile.makefile", crash_after(2, tarfile.TarFile.makefile), "cifar-10-batches-py"),
        ("imdb", "experiments.data.cache.torch.save", half_save, "aclImdb_cache/*.pt"),
    ],
    ids=["decompressing", "extracting", "caching"],
)
def test_a_crash_while_writing_leaves_nothing_that_looks_complete(
    tmp_path, monkeypatch, dataset, target, replacement, looks_complete
):
    root = tmp_path / "data"
    WRITERS[dataset](root)
    with monkeypatch.context() as patch:
        patch.setattr(target, replacement)
        with pytest.raises(KeyboardInterrupt):
            module(dataset, root, download=False).setup()
    assert not list(root.glob(looks_complete))
    assert not list(root.rglob("*.part"))  # (a SIGKILL would leave a .part, which no run takes for the file)
    data = module(dataset, root, download=False)  # and the next run simply does it again
    data.setup()
    assert len(data.splits["train"][1]) > 0
