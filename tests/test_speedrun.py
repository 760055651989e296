"""The CIFAR-10 speedrun recipe's pieces, checked on the CPU with tiny data."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import DictConfig

from experiments.data.cifar10_speedrun import AlternatingFlipCIFAR10
from experiments.models.lookahead import Lookahead
from experiments.models.nets.speedrun import ConvGroup, SpeedrunNet
from experiments.run.task import train
from tests import fixtures

SPEC = {"kind": "image", "shape": [3, 32, 32], "num_classes": 10}


def correlated_images(n: int = 64) -> torch.Tensor:
    smooth = torch.nn.functional.avg_pool2d(torch.randn(n, 3, 34, 34), 3, stride=1)  # neighbours correlate
    return smooth + 0.5 * smooth.mean(dim=1, keepdim=True)  # and so do channels


def test_whitening_layer_decorrelates_patches_and_is_fitted_once():
    net = SpeedrunNet(SPEC, widths=[8, 8, 8]).train()
    x = correlated_images()
    net(x)
    assert bool(net.whitened) and not net.whiten.weight.requires_grad
    half = net.whiten(x)[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)  # the second half mirrors the first
    covariance = torch.cov(half.T)
    assert torch.allclose(covariance, torch.eye(12), atol=0.05)
    assert half.mean(0).abs().max() < 1e-3
    weight = net.whiten.weight.clone()
    net(correlated_images())
    assert torch.equal(weight, net.whiten.weight)  # later batches leave it alone


def test_loading_an_unfitted_state_fits_the_whitening_again():
    fresh = SpeedrunNet(SPEC, widths=[8, 8, 8]).state_dict()
    net = SpeedrunNet(SPEC, widths=[8, 8, 8]).train()
    net(correlated_images())
    net.load_state_dict(fresh)  # e.g. a checkpoint saved before the first step
    assert not net.whitened
    net(correlated_images())
    assert bool(net.whitened)


def test_convolutions_start_as_identity_on_their_inputs_and_batchnorm_scales_are_frozen():
    group = ConvGroup(4, 8, bn_momentum=0.4)
    x = torch.randn(2, 4, 6, 6)
    assert torch.allclose(group.conv1(x)[:, :4], x, atol=1e-6)
    assert not group.norm1.weight.requires_grad and group.norm1.bias.requires_grad
    assert group.norm1.eps == 1e-12 and group.norm1.momentum == 0.4


def test_batchnorm_stays_float32_when_the_net_is_cast_to_16_bits():
    net = SpeedrunNet(SPEC, widths=[8, 8, 8]).train().to(torch.bfloat16)
    norms = {name for name, _ in net.named_modules() if "norm" in name}
    for name, tensor in [*net.named_parameters(), *net.named_buffers()]:
        if tensor.is_floating_point():
            expected = torch.float32 if name.rpartition(".")[0] in norms else torch.bfloat16
            assert tensor.dtype == expected, name
    logits = net(correlated_images().to(torch.bfloat16))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits.float()).all()
    assert net.groups[0].norm1.running_mean.abs().sum() > 0  # the float32 statistics took the bf16 batch in
    assert net.double().groups[0].norm1.weight.dtype == torch.float64  # wider casts apply as usual


def test_test_time_augmentation_weights_sum_to_one():
    net = SpeedrunNet(SPEC, widths=[8, 8, 8]).train()
    net(correlated_images())
    net.eval()
    flat = torch.full((3, 3, 32, 32), 0.7)  # every view of a flat image is the same image
    with torch.no_grad():
        assert torch.allclose(net(flat), net.logits(flat), atol=1e-5)
        x = correlated_images(3)
        assert not torch.allclose(net(x), net.logits(x))


def test_text_is_refused_with_one_line():
    with pytest.raises(Exception, match="model=speedrun is a net for images"):
        SpeedrunNet({"kind": "text", "vocab_size": 10, "pad_index": 0, "seq_len": 5, "num_classes": 2})


def test_alternating_flip_shows_each_image_both_ways_in_consecutive_epochs(tmp_path):
    fixtures.write_cifar10(tmp_path, per_batch=20, n_test=10)
    data = AlternatingFlipCIFAR10(data_dir=str(tmp_path), val_size=0.0, batch_size=100)
    data.setup()
    x = data.splits["train"][0]
    epochs = []
    for epoch in (0, 1, 2):
        data._current_epoch = lambda epoch=epoch: epoch
        epochs.append(data.train_dataloader().x)
    mirrored = [(e == x.flip(3)).flatten(1).all(1) & ~(e == x).flatten(1).all(1) for e in epochs]
    assert 25 < int(mirrored[0].sum()) < 75  # a random half starts mirrored
    assert torch.equal(mirrored[1], ~mirrored[0]) and torch.equal(mirrored[2], mirrored[0])


def test_lookahead_ends_on_the_slow_weights():
    model = torch.nn.Linear(3, 1)
    module = L.LightningModule()
    module.net = model
    lookahead = Lookahead(every=1, decay=0.5)
    lookahead.on_train_start(None, module)
    start = model.weight.detach().clone()
    model.weight.data += 2.0  # a step of the fast weights

    class Trainer:
        global_step = 1

    lookahead.on_train_batch_end(Trainer(), module, None, None, 0)
    assert torch.allclose(model.weight, start + 1.0)  # halfway back, and the fast weights restart there
    model.weight.data += 4.0
    lookahead.on_train_end(None, module)
    assert torch.allclose(model.weight, start + 1.0)


def test_lookahead_decay_sets_in_late_with_a_warmup_power():
    lookahead = Lookahead(every=5, decay=0.8, warmup_power=3)
    lookahead.total_steps = 100
    assert lookahead.decay_at(0) == 0.0  # the slow weights simply follow at first
    assert lookahead.decay_at(50) == pytest.approx(0.8 / 8)
    assert lookahead.decay_at(100) == lookahead.decay_at(150) == pytest.approx(0.8)
    assert Lookahead(decay=0.8).decay_at(0) == 0.8


def train_recipe(make_config, tmp_path: Path, images_per_batch: int, *overrides: str) -> DictConfig:
    """The recipe on the CPU over tiny CIFAR-10 files: the config it ran with."""
    fixtures.write_cifar10(tmp_path / "data", per_batch=images_per_batch, n_test=images_per_batch)
    cfg = make_config(
        "experiment=cifar10_speedrun",
        f"paths.data_dir={tmp_path / 'data'}",
        "trainer.accelerator=cpu",
        "logger=none",
        *overrides,
    )
    train(cfg)
    return cfg


@pytest.mark.slow  # the whole recipe, if briefly: the full tier
def test_the_recipe_trains_end_to_end(make_config, tmp_path):
    overrides = ("model.widths=[8,16,16]", "data.batch_size=50", "data.val_size=0.2", "trainer.max_epochs=6")
    cfg = train_recipe(make_config, tmp_path, 100, *overrides)
    run = Path(cfg.paths.output_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 6 and metrics["test"]["test/acc"] > 0.3  # chance is 0.1
    # Validated once, after the last epoch; no best-model file, the last checkpoint to resume from.
    assert cfg.trainer.check_val_every_n_epoch == 6 and set(metrics["val"]) == {"val/loss", "val/acc", "val/f1"}
    assert metrics["best_checkpoint"] == ""
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["last.ckpt"]


@pytest.mark.slow  # the whole recipe, if briefly: the full tier
def test_the_recipe_trains_with_bf16_weights(make_config, tmp_path):
    overrides = ("model.widths=[8,8,8]", "data.batch_size=25", "trainer.max_epochs=2", "trainer.precision=bf16-true")
    cfg = train_recipe(make_config, tmp_path, 20, *overrides)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["net.groups.0.conv1.weight"].dtype == torch.bfloat16
    assert state["net.groups.0.norm1.running_var"].dtype == torch.float32
    assert torch.isfinite(state["net.groups.2.norm2.bias"]).all()
