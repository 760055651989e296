"""MNIST, CIFAR-10 and IMDB through the project's own code: fixture files in the official formats, the
real files where present, every model on every dataset, no network, safe extraction."""

from __future__ import annotations

import os
import pickle
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.core.errors import UserError
from experiments.data import CIFAR10DataModule, IMDBDataModule, MNISTDataModule
from experiments.data.augmentation import crop
from experiments.data.cifar10 import read_batch
from experiments.data.files import extract_tar
from experiments.data.text import tokenize
from experiments.run.task import train
from tests import fixtures
from tests.conftest import REPO, run_cli

SHARED_DATA = Path(os.environ.get("EXPERIMENTS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test's download and is recorded."""
    attempts = []

    def refuse(address, *args, **kwargs):
        attempts.append(address)
        raise socket.gaierror("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", lambda self, address: refuse(address))
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    fixtures.write_mnist(root)
    fixtures.write_cifar10(root)
    fixtures.write_imdb(root)
    return root


def test_mnist_fixture_loads_in_torchvision_layout(fixture_data, no_network):
    data = MNISTDataModule(data_dir=str(fixture_data), val_size=0.1)
    data.setup()
    x, _ = data.splits["train"]
    assert x.shape == (540, 1, 28, 28) and x.dtype == torch.uint8
    assert len(data.splits["val"][1]) == 60 and len(data.splits["test"][1]) == 200
    assert (fixture_data / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()  # torchvision's layout
    assert no_network == []


def test_cifar10_fixture_loads_from_its_archive(fixture_data, no_network):
    data = CIFAR10DataModule(data_dir=str(fixture_data), val_size=0.2)
    data.setup()
    assert data.splits["train"][0].shape == (400, 3, 32, 32)
    assert len(data.splits["val"][1]) == 100 and len(data.splits["test"][1]) == 200
    assert (fixture_data / "cifar-10-batches-py" / "test_batch").is_file()
    assert no_network == []


def test_imdb_fixture_is_tokenised_encoded_and_cached(fixture_data, no_network, monkeypatch):
    data = IMDBDataModule(data_dir=str(fixture_data), vocab_size=100, seq_len=40, val_size=0.25)
    data.setup()
    x, y = data.splits["train"]
    assert x.shape == (90, 40) and set(y.tolist()) == {0, 1}
    assert len(data.splits["val"][1]) == 30 and data.splits["test"][0].shape == (120, 40)
    assert data.vocabulary[:2] == ["<pad>", "<unk>"] and "great" in data.vocabulary and "<br" not in data.vocabulary
    assert data.cache_path.is_file() and no_network == []

    # A second run reads the cache and tokenises nothing.
    monkeypatch.setattr("experiments.data.text.tokenize", lambda text: pytest.fail("tokenised again"))
    again = IMDBDataModule(data_dir=str(fixture_data), vocab_size=100, seq_len=40, val_size=0.25)
    again.setup()
    assert torch.equal(again.splits["test"][0], data.splits["test"][0])
    # Other settings, another cache file.
    assert IMDBDataModule(data_dir=str(fixture_data), seq_len=41).cache_path != data.cache_path


def test_tokenizer_splits_words_from_punctuation_and_drops_line_breaks():
    assert tokenize("It wasn't GOOD.<br /><br />10/10!") == ["it", "wasn't", "good", ".", "10", "/", "10", "!"]


def test_vocabulary_comes_from_the_training_part_only(tmp_path):
    root = tmp_path / "data"
    fixtures.write_imdb(root, per_folder=4)
    marker = "zzzonlyintest"
    extract_tar(root / "aclImdb_v1.tar.gz", root, "aclImdb")
    for path in (root / "aclImdb" / "test" / "pos").glob("*.txt"):
        path.write_text(f"{marker} {marker} {marker}")
    data = IMDBDataModule(data_dir=str(root), val_size=0.25, min_freq=1)
    data.setup()
    assert marker not in data.vocabulary
    assert (data.splits["test"][0] == 1).any()  # it is <unk> there


@pytest.mark.parametrize(
    ("model", "data_name"),
    [  # the RNN over 400-token reviews takes seconds: in the full tier
        pytest.param(m, d, id=f"{m}-{d}", marks=pytest.mark.slow if (m, d) == ("rnn", "imdb") else ())
        for m in ("mlp", "cnn", "rnn")
        for d in ("mnist", "cifar10", "imdb")
    ],
)
def test_every_model_trains_on_every_dataset(make_config, fixture_data, data_name, model):
    cfg = make_config(
        f"data={data_name}",
        f"model={model}",
        f"paths.data_dir={fixture_data}",
        "debug=limit_batches",
        "logger=none",
        "trainer.accelerator=cpu",
        "data.batch_size=16",
    )
    assert 0.0 <= train(cfg) <= 1.0


@pytest.mark.slow  # trains every model to a threshold: the full tier
def test_models_learn_the_fixture_patterns(make_config, fixture_data, tmp_path):
    """Not only do the shapes fit: a few epochs separate the fixture classes far above chance."""
    cfg = make_config(
        "data=imdb",
        "model=mlp",
        f"paths.data_dir={fixture_data}",
        "logger=none",
        "trainer.max_epochs=8",
        "data.batch_size=16",
        "data.vocab_size=100",
        "data.seq_len=40",
        "optimizer.lr=0.01",
    )
    assert train(cfg) > 0.9
    cfg = make_config(
        "data=mnist",
        "model=cnn",
        f"paths.data_dir={fixture_data}",
        "logger=none",
        "trainer.max_epochs=2",
        "data.batch_size=32",
        f"paths.output_dir={tmp_path / 'mnist'}",
    )
    assert train(cfg) > 0.9


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (MNISTDataModule, "MNIST: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz"),
        (CIFAR10DataModule, "CIFAR-10: cifar-10-python.tar.gz, or cifar-10-batches-py/ not found in"),
        (IMDBDataModule, "IMDB: aclImdb_v1.tar.gz, or aclImdb/ not found in"),
    ],
)
def test_offline_without_files_gives_the_clear_error_and_leaves_nothing(tmp_path, no_network, module, expected):
    with pytest.raises(UserError) as error:
        module(data_dir=str(tmp_path / "data")).setup()
    message = str(error.value)
    assert message.startswith(expected) and "the download failed" in message and "https://" in message
    assert "\n" not in message
    assert no_network  # it did try
    leftovers = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    assert leftovers == []  # nothing half-downloaded that looks complete


@pytest.mark.slow
def test_offline_error_from_the_cli_is_one_line_with_exit_code_2(tmp_path):
    result = run_cli("data=cifar10", f"paths.data_dir={tmp_path / 'data'}", "data.download=false", cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: CIFAR-10: cifar-10-python.tar.gz, or cifar-10-batches-py/ not found in")
    assert "data.download=false" in line and "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in line


@pytest.mark.parametrize("member", ["../escaped.txt", "/tmp/absolute-escape.txt", "aclImdb/../../escaped.txt"])
def test_tar_members_that_escape_are_refused_and_write_nothing(tmp_path, member):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        fixtures.add_file(tar, "aclImdb/README", b"fine")
        fixtures.add_file(tar, member, b"escaped")
    target = tmp_path / "data"
    target.mkdir()
    with pytest.raises(UserError, match="unsafe"):
        extract_tar(archive, target, "aclImdb")
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/absolute-escape.txt").exists()
    assert list(target.iterdir()) == []


def test_tar_links_pointing_outside_are_refused(tmp_path):
    archive = tmp_path / "links.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("aclImdb/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    (tmp_path / "data").mkdir()
    with pytest.raises(UserError, match="cannot extract"):
        extract_tar(archive, tmp_path / "data", "aclImdb")
    assert list((tmp_path / "data").iterdir()) == []


def test_cifar_batches_that_would_run_code_are_refused(tmp_path):
    marker = tmp_path / "marker"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Exploit(), b"labels": [0]}, protocol=2))
    with pytest.raises(UserError, match="refusing to load"):
        read_batch(path)
    assert not marker.exists()


def test_augmentation_translates_and_flips_training_batches_only(fixture_data):
    data = CIFAR10DataModule(data_dir=str(fixture_data))
    data.setup()
    x = data.normalize(data.splits["train"][0][:64])
    augmented = data.augment(x)
    assert augmented.shape == x.shape and not torch.equal(augmented, x)
    # With offset (pad, pad) a crop of the padded image is the image itself.
    pad = 4
    padded = torch.nn.functional.pad(x, (pad,) * 4, mode="reflect")
    offset = torch.full((64, 1, 1, 1), pad)
    assert torch.equal(crop(padded, offset, offset, 32, 32), x)
    shifted = crop(padded, offset + 1, offset, 32, 32)  # one row down
    assert torch.equal(shifted[:, :, :-1], x[:, :, 1:])
    batch = (data.splits["test"][0][:8], data.splits["test"][1][:8])
    assert torch.equal(data.on_after_batch_transfer(batch, 0)[0], data.normalize(batch[0]))  # no trainer: eval


def test_mnist_translates_training_batches_when_asked_and_never_flips(fixture_data):
    plain = MNISTDataModule(data_dir=str(fixture_data))
    plain.setup()
    x = plain.normalize(plain.splits["train"][0][:64])
    assert torch.equal(plain.augment(x), x)  # translate: 0 by default
    shifting = MNISTDataModule(data_dir=str(fixture_data), translate=2)
    torch.manual_seed(0)
    shifted = shifting.augment(x)
    assert shifted.shape == x.shape and not torch.equal(shifted, x)
    # Each image is its original moved by at most 2 pixels each way; a mirror image never appears.
    padded = torch.nn.functional.pad(x, (2,) * 4, mode="reflect")
    crops = [
        crop(padded, torch.full((64, 1, 1, 1), dy), torch.full((64, 1, 1, 1), dx), 28, 28)
        for dy in range(5)
        for dx in range(5)
    ]
    matches = torch.stack([(c == shifted).flatten(1).all(1) for c in crops])
    assert matches.any(0).all()


# The real files (see shared/data/README.md): read through copies, never in place.


def real(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data not present: {path} (set EXPERIMENTS_SHARED_DATA to its folder)")
    return path


def test_real_mnist_through_the_data_module(tmp_path, no_network):
    shutil.copytree(real("MNIST"), tmp_path / "MNIST")
    data = MNISTDataModule(data_dir=str(tmp_path), val_size=0.1)
    data.setup()
    assert [len(data.splits[s][1]) for s in ("train", "val", "test")] == [54000, 6000, 10000]
    from torchvision.datasets.mnist import read_label_file

    labels = read_label_file(str(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"))
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    pixels = data.splits["train"][0].float()
    assert pixels.mean().item() == pytest.approx(data.mean[0], rel=0.01)
    assert no_network == []


@pytest.mark.slow
def test_real_imdb_tree_is_read_and_encoded(tmp_path, no_network):
    subprocess.run(["tar", "-xJf", real("aclImdb_labelled.tar.xz"), "-C", tmp_path], check=True)
    data = IMDBDataModule(data_dir=str(tmp_path), seq_len=64)
    data.setup()
    assert [len(data.splits[s][1]) for s in ("train", "val", "test")] == [22500, 2500, 25000]
    assert data.splits["test"][1].float().mean().item() == 0.5
    assert len(data.vocabulary) == 20000 and data.vocabulary[2] == "the"
    assert (data.splits["train"][0] == 1).float().mean().item() < 0.05  # few tokens fall outside the vocabulary


def test_real_cifar10_images_as_official_batches(tmp_path, no_network):
    arrays = np.load(real("cifar10_test5k_jpeg_q75.npz"))
    images, labels = arrays["x"].transpose(0, 3, 1, 2), arrays["y"]  # NHWC -> NCHW, the batches' row order
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(5):
        part = slice(800 * i, 800 * (i + 1))
        (folder / f"data_batch_{i + 1}").write_bytes(fixtures.cifar_batch(images[part], labels[part], "train"))
    (folder / "test_batch").write_bytes(fixtures.cifar_batch(images[4000:], labels[4000:], "test"))
    data = CIFAR10DataModule(data_dir=str(tmp_path), val_size=0.0)
    data.setup()
    assert torch.equal(data.splits["test"][0], torch.from_numpy(images[4000:]))
    assert torch.equal(data.splits["test"][1], torch.from_numpy(labels[4000:].astype(np.int64)))
    assert sorted(data.splits["train"][1].tolist()) == sorted(labels[:4000].tolist())


def test_fetch_keeps_only_a_file_whose_checksum_matches(tmp_path):
    """A real HTTP download from a server on 127.0.0.1: wrong bytes leave nothing, right bytes land whole."""
    import hashlib
    import http.server
    import threading
    from functools import partial

    from experiments.data.files import DownloadError, fetch

    served = tmp_path / "served"
    served.mkdir()
    (served / "archive.tar.gz").write_bytes(b"the real bytes")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/archive.tar.gz"
    destination = tmp_path / "data" / "archive.tar.gz"
    try:
        with pytest.raises(DownloadError, match="checksum mismatch"):
            fetch([url], destination, md5="0" * 32)
        assert list(destination.parent.iterdir()) == []  # no partial or wrong file left behind
        fetch([url], destination, md5=hashlib.md5(b"the real bytes").hexdigest())
        assert destination.read_bytes() == b"the real bytes"
        assert list(destination.parent.iterdir()) == [destination]
    finally:
        server.shutdown()
