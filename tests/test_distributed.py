"""Data parallelism: in-memory batches shard by process, and a real two-process run on the CPU (gloo)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from experiments.data import DigitsDataModule
from experiments.data.in_memory import TensorBatches
from experiments.models.model import Model
from tests.conftest import best_checkpoint, run_cli


@pytest.mark.parametrize(("n", "world_size"), [(24, 2), (23, 2), (25, 3), (13, 3)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_shards_together_are_the_one_process_epoch(n, world_size, shuffle):
    x, y = torch.arange(n).view(n, 1), torch.arange(n)
    one = TensorBatches(x, y, batch_size=4 * world_size, shuffle=shuffle, seed=5)
    shards = [
        TensorBatches(x, y, batch_size=4, shuffle=shuffle, seed=5, rank=rank, world_size=world_size)
        for rank in range(world_size)
    ]
    assert {len(shard) for shard in shards} == {len(one)}  # every process runs the same number of steps
    per_rank = [list(shard) for shard in shards]
    for step, (_, global_y) in enumerate(one):
        pieces = [batches[step][1] for batches in per_rank]
        assert all(len(piece) > 0 for piece in pieces)
        assert torch.equal(torch.cat(pieces)[: len(global_y)], global_y)  # in order, each sample once
        assert all(torch.equal(batches[step][0].view(-1), batches[step][1]) for batches in per_rank)


def test_a_last_batch_smaller_than_the_process_count_still_gives_every_process_a_sample():
    x, y = torch.arange(7).view(7, 1), torch.arange(7)  # 2 global batches of 3 x 2: the last has 1 sample
    shards = [list(TensorBatches(x, y, batch_size=2, rank=rank, world_size=3)) for rank in range(3)]
    assert [b[1][1].tolist() for b in shards] == [[6], [6], [6]]


@pytest.mark.slow
def test_two_cpu_processes_cover_the_epoch_and_report_synchronised_metrics(tmp_path: Path):
    result = run_cli("trainer=ddp_cpu", "model=mlp", "trainer.max_epochs=2", "logger=csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs" / "train" / "runs").iterdir()  # both processes wrote one run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    data = DigitsDataModule(seed=42)
    data.setup()
    training_samples = len(data.splits["train"][1])
    assert metrics["global_steps"] == 2 * math.ceil(training_samples / (2 * data.batch_size))
    assert result.stdout.count("run directory") == 1  # one summary, from the first process

    # Test metrics gathered from both halves of the test split equal one process evaluating all of it.
    model = Model.load_from_checkpoint(best_checkpoint(run_dir), map_location="cpu").eval()
    with torch.no_grad():
        correct = sum(
            (model(x).argmax(1) == y).sum().item()
            for x, y in (data.on_after_batch_transfer(batch, 0) for batch in data.test_dataloader())
        )
    assert metrics["test"]["test/acc"] == pytest.approx(correct / len(data.splits["test"][1]), abs=1e-6)
    assert metrics["test"]["test/acc"] > 0.5
