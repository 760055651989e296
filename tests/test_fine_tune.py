"""`init_from=`: a new run starts from another run's weights, and nothing else of it."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from experiments.core.errors import UserError
from experiments.data import DigitsDataModule
from experiments.models.model import Model
from experiments.run.recovery import init_weights
from tests.conftest import best_checkpoint

MLP = {"_target_": "experiments.models.nets.MLP", "width": 16, "depth": 1}
ADAMW = {"_target_": "experiments.models.optim.AdamW", "lr": 0.01}
QUICK = ("model=mlp", "model.width=16", "model.depth=1", "logger=none", "trainer.accelerator=cpu")


def classifier(num_classes: int = 10, net: dict = MLP) -> Model:
    return Model({**DigitsDataModule.spec, "num_classes": num_classes}, net, ADAMW, {})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """The best checkpoint of a short run on the digits."""
    from experiments.core.config import compose
    from experiments.run.task import train

    output = tmp_path_factory.mktemp("trained")
    train(compose([*QUICK, "trainer.max_epochs=2", "test=false", f"paths.output_dir={output}"]))
    return best_checkpoint(output)


def test_a_new_run_starts_from_the_weights_and_only_them(trained, make_config, tmp_path, caplog):
    from experiments.core.config import compose
    from experiments.run.task import train

    from_scratch = train(compose([*QUICK, "trainer.max_epochs=1", f"paths.output_dir={tmp_path / 'scratch'}"]))
    cfg = make_config(*QUICK, "trainer.max_epochs=1", f"init_from={trained}")
    with caplog.at_level(logging.INFO):
        fine_tuned = train(cfg)
    assert "init_from" in caplog.text and "4 of the net's 4 tensors loaded" in caplog.text
    metrics = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["global_steps"] == 20  # epoch 0 to 1 of its own: 1,222 / 64 batches
    assert metrics["best_checkpoint"].startswith("checkpoints/")  # its own directory, named relative to it
    assert fine_tuned > from_scratch + 0.1  # two epochs of training carried over


def test_the_weights_are_the_checkpoints_bit_for_bit(trained):
    model = classifier()
    init_weights(model, str(trained))
    saved = torch.load(trained, weights_only=True)["state_dict"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved[key]), key


def test_another_number_of_classes_keeps_a_fresh_head_and_says_so(trained):
    model = classifier(num_classes=5)
    fresh_head = model.net.layers[-1].weight.detach().clone()
    line = init_weights(model, str(trained))
    assert line.endswith(
        "2 of the net's 4 tensors loaded; reinitialised, their shape differs: net.layers.3.bias, net.layers.3.weight"
    )
    assert torch.equal(model.net.layers[-1].weight, fresh_head)


def test_a_nets_own_state_dict_is_taken_too(tmp_path, trained):
    source = classifier()
    init_weights(source, str(trained))
    path = tmp_path / "net.pt"
    torch.save(source.net.state_dict(), path)
    model = classifier()
    assert "4 of the net's 4 tensors loaded" in init_weights(model, str(path))
    assert torch.equal(model.net.layers[0].weight, source.net.layers[0].weight)


def test_what_cannot_start_a_run_is_one_line(tmp_path, trained):
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    with pytest.raises(UserError, match=r"refusing to load .*notes.ckpt: it holds more than plain values"):
        init_weights(classifier(), str(text))
    with pytest.raises(UserError, match=r"no checkpoint at"):
        init_weights(classifier(), str(tmp_path / "missing.ckpt"))
    cnn = {"_target_": "experiments.models.nets.CNN", "channels": [4]}
    with pytest.raises(UserError, match=r"none of its weights fit this net \(it has net\.layers\.0\.weight, \.\.\.\)"):
        init_weights(classifier(net=cnn), str(trained))
    torch.save({"epoch": 3}, tmp_path / "empty.ckpt")
    with pytest.raises(UserError, match=r"it holds no weights"):
        init_weights(classifier(), str(tmp_path / "empty.ckpt"))


def test_resume_and_init_from_together_are_refused(make_config, trained):
    from experiments.core.config import validate

    with pytest.raises(UserError, match=r"^resume= continues a run, init_from= starts a new one"):
        validate(make_config(f"resume={trained}", f"init_from={trained}"))
