"""Epoch metrics and the confusion matrix, counted by torchmetrics: checked against the formulas by hand, over
uneven batches, across (simulated) processes and through a mid-epoch checkpoint."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from experiments.data import DigitsDataModule
from experiments.models.model import Model, Tally
from experiments.models.tasks import Classification
from experiments.reporting.loggers.tensorboard import TensorBoard


def classes(n: int) -> dict:
    """The epoch metrics of a classification of n classes, as the model's tallies count them."""
    return Classification().epoch_metrics({"num_classes": n})


def logits_for(predictions: list[int], num_classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(predictions), num_classes).float()


def by_hand(predictions: torch.Tensor, targets: torch.Tensor, num_classes: int) -> tuple[float, float]:
    """Accuracy, and macro-F1 over the classes that occur as a target or a prediction."""
    scores = []
    for c in range(num_classes):
        predicted, true = predictions == c, targets == c
        if predicted.any() or true.any():
            scores.append(2 * (predicted & true).sum().item() / (predicted.sum() + true.sum()).item())
    return (predictions == targets).float().mean().item(), sum(scores) / len(scores)


def test_macro_f1_leaves_out_classes_never_seen_and_counts_classes_never_true_as_zero():
    # Class 3 is predicted once and never true (F1 0, counted); class 4 is neither (left out).
    tally = Tally(classes(5))
    tally.add(logits_for([0, 1, 1, 1], 5), torch.tensor([0, 0, 1, 1]), torch.tensor(1.0))
    tally.add(logits_for([2, 3], 5), torch.tensor([2, 2]), torch.tensor(4.0))
    metrics = tally.compute()
    # F1 per class: 2/3, 4/5, 2/3, 0; over four classes 8/15 (over all five it would be 32/75, over the
    # three true ones 32/45).
    assert metrics["f1"].item() == pytest.approx(8 / 15)
    assert metrics["acc"].item() == pytest.approx(4 / 6)
    assert metrics["loss"].item() == pytest.approx((4 * 1.0 + 2 * 4.0) / 6)  # weighted by batch size, not 2.5


def test_tally_matches_the_formulas_over_uneven_batches():
    generator = torch.Generator().manual_seed(0)
    tally = Tally(classes(6))
    predictions, targets, weighted, samples = [], [], 0.0, 0
    for size in (7, 16, 3):
        logits = torch.randn(size, 6, generator=generator)
        y = torch.randint(0, 4, (size,), generator=generator)  # classes 4 and 5 never true, maybe predicted
        loss = torch.nn.functional.cross_entropy(logits, y)
        tally.add(logits, y, loss)
        predictions.append(logits.argmax(dim=1)), targets.append(y)
        weighted, samples = weighted + loss.item() * size, samples + size
    accuracy, f1 = by_hand(torch.cat(predictions), torch.cat(targets), 6)
    metrics = tally.compute()
    assert list(metrics) == ["loss", "acc", "f1"]
    assert metrics["acc"].item() == pytest.approx(accuracy)
    assert metrics["f1"].item() == pytest.approx(f1)
    assert metrics["loss"].item() == pytest.approx(weighted / samples)


def test_each_epoch_starts_from_zero():
    tally = Tally(classes(2))
    tally.add(logits_for([0, 0], 2), torch.tensor([0, 0]), torch.tensor(1.0))
    tally.compute()
    tally.reset()
    tally.add(logits_for([1], 2), torch.tensor([0]), torch.tensor(3.0))
    metrics = tally.compute()
    assert (metrics["acc"].item(), metrics["f1"].item(), metrics["loss"].item()) == (0.0, 0.0, 3.0)


def test_a_nan_loss_keeps_the_epoch_mean_nan():
    tally = Tally(classes(2))
    tally.add(logits_for([0, 1], 2), torch.tensor([0, 1]), torch.tensor(1.0))
    tally.add(logits_for([0], 2), torch.tensor([0]), torch.tensor(float("nan")))
    metrics = tally.compute()
    assert metrics["loss"].isnan() and metrics["acc"].item() == 1.0


def gathering(tally: Tally, gather) -> None:
    """As if in a process group: each state of each metric goes through `gather` when computed."""
    for metric in (tally.loss, *tally.metrics.values()):
        metric.distributed_available_fn = lambda: True
        metric.dist_sync_fn = gather


def test_processes_sum_their_counts_before_dividing():
    # The second process's states, in the order the metrics compute and gather them.
    theirs = Tally(classes(3))
    theirs.add(logits_for([2], 3), torch.tensor([0]), torch.tensor(5.0))
    recorded = []
    gathering(theirs, lambda tensor, group=None: recorded.append(tensor) or [tensor])
    assert theirs.compute()["acc"].item() == 0.0
    ours = Tally(classes(3))
    ours.add(logits_for([0, 1, 1], 3), torch.tensor([0, 1, 1]), torch.tensor(1.0))
    states = iter(recorded)
    gathering(ours, lambda tensor, group=None: [tensor, next(states)])
    metrics = ours.compute()
    assert next(states, None) is None  # every state gathered once
    accuracy, f1 = by_hand(torch.tensor([0, 1, 1, 2]), torch.tensor([0, 1, 1, 0]), 3)
    assert metrics["acc"].item() == pytest.approx(accuracy) == 3 / 4  # not the mean of 1 and 0
    assert metrics["f1"].item() == pytest.approx(f1)
    assert metrics["loss"].item() == pytest.approx((3 * 1.0 + 5.0) / 4)


def test_a_tally_resumed_from_a_checkpoint_counts_as_the_uninterrupted_one():
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(n, 4, generator=generator), torch.randint(0, 4, (n,), generator=generator)) for n in (5, 8)]
    whole, before = Tally(classes(4)), Tally(classes(4))
    for x, y in batches:
        whole.add(x, y, torch.nn.functional.cross_entropy(x, y))
    x, y = batches[0]
    before.add(x, y, torch.nn.functional.cross_entropy(x, y))
    saved = before.state_dict()
    assert set(saved) == {"losses", "sizes", "predictions", "targets"}  # the checkpoint's format, as before
    resumed = Tally(classes(4))
    resumed.load_state_dict(saved)
    x, y = batches[1]
    resumed.add(x, y, torch.nn.functional.cross_entropy(x, y))
    expected = {name: value.item() for name, value in whole.compute().items()}
    assert {name: value.item() for name, value in resumed.compute().items()} == pytest.approx(expected)


def test_a_resumed_tally_goes_where_it_is_counted():
    tally, saved = Tally(classes(2)), Tally(classes(2))
    saved.add(logits_for([0, 1], 2), torch.tensor([0, 0]), torch.tensor(1.0))
    tally.to(torch.device("meta"))  # stands in for a GPU: the checkpoint's tensors load on the CPU
    tally.load_state_dict(saved.state_dict())
    assert {t.device.type for t in [*tally.losses, *tally.predictions, *tally.targets]} == {"meta"}


def test_the_metrics_add_nothing_to_the_state_dict():
    # Checkpoints of earlier runs hold the net's weights only, and load with strict key matching.
    model = Model(
        DigitsDataModule.spec,
        {"_target_": "experiments.models.nets.MLP"},
        {"_target_": "experiments.models.optim.AdamW"},
        {},
    )
    assert set(model.state_dict()) == {f"net.{key}" for key in model.net.state_dict()}
    model.load_state_dict({f"net.{key}": value for key, value in model.net.state_dict().items()}, strict=True)
    for tally in model.tallies.values():  # non-persistent states: none even if registered as submodules
        assert tally.metrics.state_dict() == {} and tally.loss.state_dict() == {}


def test_the_confusion_matrix_counts_true_classes_in_rows_and_predictions_in_columns(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    import experiments.reporting.dashboards as dashboards

    drawn = []

    def figure(confusion, names):
        drawn.append((confusion, names))
        return plt.figure()

    monkeypatch.setattr(dashboards, "confusion_figure", figure)
    logger = TensorBoard(tmp_path)
    names = ["a", "b", "c", "d"]
    trainer = SimpleNamespace(
        loggers=[logger], is_global_zero=True, global_step=3, datamodule=SimpleNamespace(class_names=names)
    )
    module = SimpleNamespace(
        hparams=SimpleNamespace(spec={"num_classes": 4}), device=torch.device("cpu"), task=Classification()
    )
    callback = dashboards.Dashboards()
    callback.on_test_epoch_start(trainer, module)
    batches = [([0, 1, 1, 3], [0, 0, 1, 1]), ([3, 3], [2, 3])]  # (predicted, true); class 2 never predicted
    for predicted, true in batches:
        logits = logits_for(predicted, 4)
        callback.on_test_batch_end(trainer, module, logits, (torch.zeros(len(true), 2), torch.tensor(true)), 0)
    callback.on_test_epoch_end(trainer, module)
    ((confusion, shown_names),) = drawn
    expected = torch.zeros(4, 4, dtype=torch.long)
    for predicted, true in batches:
        for p, t in zip(predicted, true, strict=True):
            expected[t, p] += 1
    assert confusion.dtype == torch.long and torch.equal(confusion, expected) and shown_names == names
    logger.experiment.close()


def test_an_evaluation_in_inference_mode_leaves_counts_any_later_one_can_add_to():
    tally = Tally(classes(3))
    for mode in (torch.inference_mode, torch.no_grad, torch.enable_grad):  # Lightning's evaluations, training
        with mode():
            tally.add(logits_for([0, 1, 1], 3), torch.tensor([0, 1, 2]), torch.tensor(1.0))
            assert tally.compute()["acc"].item() == pytest.approx(2 / 3)
        tally.reset()
