"""CUDA graphs for training steps: which calls replay the graph, and what recording leaves behind.

Recording needs a GPU; here a stand-in for `torch.cuda.make_graphed_callables` does what it does to the
module (warm-up forwards in training mode, then `net.forward` replaced by the graph), so the rest of
the logic runs as it does on a GPU. The GPU runs themselves are in docs/benchmarks.md.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from experiments.core.config import validate
from experiments.core.errors import UserError
from experiments.models.graphs import GraphedTraining, graphed_training_for
from experiments.models.nets import build_net

SPEC = {"kind": "image", "shape": [3, 8, 8], "num_classes": 10}


class StandIn:
    """Records nothing: runs the warm-up forwards and marks which calls the 'graph' served."""

    def __init__(self) -> None:
        self.replayed: list[torch.Size] = []

    def __call__(self, net: torch.nn.Module, sample_args: tuple[torch.Tensor, ...]) -> None:
        eager = net.forward
        for _ in range(3):
            net(*sample_args)

        def graph(x: torch.Tensor) -> torch.Tensor:
            self.replayed.append(x.shape)
            return eager(x)

        net.forward = graph


def batches(*sizes: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(n, *SPEC["shape"], generator=generator) for n in sizes]


def test_full_size_training_batches_replay_the_graph_and_the_rest_run_eagerly():
    net = build_net({"_target_": "experiments.models.nets.CNN", "channels": [4], "batch_norm": True}, SPEC)
    record = StandIn()
    graphed = GraphedTraining(net, record=record)
    first, second, last = batches(16, 16, 5)
    for x in (first, second, last):
        assert graphed(x).shape == (len(x), 10)
    assert record.replayed == [first.shape, second.shape]  # the smaller last batch of an epoch: eagerly
    net.eval()
    graphed(first)
    assert len(record.replayed) == 2  # evaluation: eagerly
    assert "forward" not in vars(net)  # the module keeps its own forward


def test_a_resumed_run_starting_on_a_smaller_last_batch_records_at_the_next_full_one():
    net = build_net({"_target_": "experiments.models.nets.CNN", "channels": [4], "batch_norm": True}, SPEC)
    record = StandIn()
    graphed = GraphedTraining(net, batch_size=16, record=record)
    last, first, second = batches(5, 16, 16)  # the end of an epoch, then the next one
    for x in (last, first, second):
        graphed(x)
    assert graphed.shape == first.shape and record.replayed == [first.shape, second.shape]


def test_evaluation_before_training_records_nothing():
    net = build_net({"_target_": "experiments.models.nets.CNN", "channels": [4], "batch_norm": True}, SPEC).eval()
    graphed = GraphedTraining(net, record=StandIn())
    graphed(*batches(16))  # a sanity check's validation batch, before the first training step
    assert graphed.graphed is None and "forward" not in vars(net)


def test_recording_leaves_the_running_statistics_as_one_eager_step_would():
    eager_net = build_net({"_target_": "experiments.models.nets.CNN", "channels": [4], "batch_norm": True}, SPEC)
    net = build_net({"_target_": "experiments.models.nets.CNN", "channels": [4], "batch_norm": True}, SPEC)
    net.load_state_dict(eager_net.state_dict())
    (x,) = batches(16)
    eager_net(x)
    GraphedTraining(net, record=StandIn())(x)  # three warm-up forwards, then the step itself
    for (name, ours), theirs in zip(net.state_dict().items(), eager_net.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs), name


def test_the_speedrun_net_is_whitened_once_by_the_recording():
    net = build_net({"_target_": "experiments.models.nets.SpeedrunNet", "widths": [8, 8, 8]}, SPEC)
    (x,) = batches(16)
    GraphedTraining(net, record=StandIn())(x)
    assert bool(net.whitened)  # fitted on the batch during the warm-up, and kept (not put back)


def test_compile_and_cuda_graphs_together_are_refused(make_config):
    cfg = make_config("compile=true", "cuda_graphs=true")
    with pytest.raises(UserError, match="compile=true and cuda_graphs=true"):
        validate(cfg)


def test_a_net_that_cannot_be_recorded_is_one_line_naming_the_switch():
    def record(net, sample_args):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nCUDA kernel errors ...")

    graphed = GraphedTraining(
        build_net({"_target_": "experiments.models.nets.MLP", "width": 8, "depth": 1}, SPEC), record=record
    )
    with pytest.raises(
        UserError,
        match=r"cannot be recorded .*\(CUDA error: operation not permitted when stream is "
        r"capturing\); train it with cuda_graphs=false$",
    ):
        graphed(*batches(4))


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("mat1 and mat2 shapes")])
def test_other_errors_while_recording_keep_their_traceback(error):
    def record(net, sample_args):
        raise error

    graphed = GraphedTraining(
        build_net({"_target_": "experiments.models.nets.MLP", "width": 8, "depth": 1}, SPEC), record=record
    )
    with pytest.raises(type(error)) as raised:
        graphed(*batches(4))
    assert raised.value is error


def test_a_fit_on_one_gpu_records_the_data_modules_batch_size_and_nothing_else_records():
    data = SimpleNamespace(batch_size=64)

    def trainer(device: str, world_size: int = 1, datamodule=data):
        return SimpleNamespace(
            strategy=SimpleNamespace(root_device=torch.device(device)), world_size=world_size, datamodule=datamodule
        )

    net = build_net({"_target_": "experiments.models.nets.MLP", "width": 8, "depth": 1}, SPEC)
    assert graphed_training_for(net, trainer("cuda")).batch_size == 64
    assert graphed_training_for(net, trainer("cuda", datamodule=None)).batch_size is None  # its first batch's
    assert graphed_training_for(net, trainer("cpu")) is None
    assert graphed_training_for(net, trainer("cuda", world_size=2)) is None
