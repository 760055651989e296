"""In-memory batching and the bundled digits split."""

from __future__ import annotations

import torch

from experiments.data import DigitsDataModule
from experiments.data.in_memory import TensorBatches


def test_batches_cover_each_sample_once_in_a_new_order_each_epoch():
    x, y = torch.arange(10).view(10, 1), torch.arange(10)
    epoch = 0
    batches = TensorBatches(x, y, batch_size=4, shuffle=True, seed=3, epoch=lambda: epoch)
    assert len(batches) == 3
    first = torch.cat([b[1] for b in batches])
    assert sorted(first.tolist()) == list(range(10))
    assert torch.equal(first, torch.cat([b[1] for b in batches]))  # same epoch, same order: resumable
    epoch = 1
    assert not torch.equal(first, torch.cat([b[1] for b in batches]))
    assert all(torch.equal(bx.view(-1), by) for bx, by in batches)  # inputs stay paired with labels


def test_digits_split_is_deterministic_stratified_and_disjoint():
    first, second = DigitsDataModule(seed=1), DigitsDataModule(seed=1)
    first.setup(), second.setup()
    sizes = {name: len(y) for name, (_, y) in first.splits.items()}
    assert sum(sizes.values()) == 1797 and sizes["val"] == sizes["test"] == 270
    for name in ("train", "val", "test"):
        assert torch.equal(first.splits[name][0], second.splits[name][0])
    train = {tuple(x.flatten().tolist()) for x in first.splits["train"][0]}
    test = {tuple(x.flatten().tolist()) for x in first.splits["test"][0]}
    assert len(test - train) > 250  # (a few digits are pixel-identical in the original set)
    assert torch.bincount(first.splits["test"][1]).min() >= 25  # every class is in the test split
    other = DigitsDataModule(seed=2)
    other.setup()
    assert not torch.equal(first.splits["test"][1], other.splits["test"][1])


def test_batches_are_normalised_after_transfer():
    data = DigitsDataModule(seed=0)
    data.setup()
    x, y = next(iter(data.train_dataloader()))
    assert x.dtype == torch.uint8  # compact in memory and on the way to the device
    x, y = data.on_after_batch_transfer((x, y), 0)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert abs(x.mean().item()) < 0.3 and 0.7 < x.std().item() < 1.3


def test_normalising_a_float_batch_leaves_the_stored_split_untouched():
    # Normalisation works in place on its own copy: an evaluation batch is a view of the split itself.
    data = DigitsDataModule(seed=0)
    data.setup()
    stored = data.splits["val"][0].float()
    data.splits["val"] = (stored, data.splits["val"][1])
    before = stored.clone()
    x, _ = data.on_after_batch_transfer(next(iter(data.val_dataloader())), 0)
    assert torch.equal(stored, before)
    assert torch.allclose(x, (before[: len(x)] - data.mean[0]) / data.std[0], atol=1e-5)
