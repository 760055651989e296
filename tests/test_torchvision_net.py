"""`model=torchvision`: a torchvision classification model by name, its weights from torchvision or a file, its head
new for the data's classes, its backbone frozen for the first epochs and then trained; and the one-line errors of
the names and weights it cannot use. Offline: weights come from files the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torchvision

from experiments.data import DigitsDataModule
from experiments.models.nets import TorchvisionNet
from tests.conftest import REPO, run_cli
from tests.test_image_folder import write_shapes
from tests.test_reliability_config import error_line_leaving_nothing


class WeightsPerEpoch(L.Callback):
    """Saves the net's state dict after every training epoch, as `folder/epoch<N>.pt`, and the first before any."""

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)

    def _save(self, pl_module, name: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().clone() for k, v in pl_module.net.state_dict().items()}, self.folder / name)

    def on_train_start(self, trainer, pl_module) -> None:
        self._save(pl_module, "start.pt")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(pl_module, f"epoch{trainer.current_epoch}.pt")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_shapes(root, 12)
    return root


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory) -> Path:
    """A resnet18's state dict, as torchvision builds it (1,000 classes), saved with torch.save."""
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


def common(tmp_path: Path, photos: Path) -> list[str]:
    return [
        "data=image_folder",
        f"data.root={photos}",
        f"data.data_dir={tmp_path / 'data'}",
        "data.batch_size=8",
        "data.image_size=24",
        "trainer.accelerator=cpu",
        "logger=none",
        "callbacks.dashboards=null",
    ]


@pytest.mark.slow
def test_weights_from_a_file_train_with_the_backbone_frozen_then_unfrozen_and_a_head_for_the_classes(
    tmp_path, photos, resnet18_file
):
    run_dir, snapshots = tmp_path / "run", tmp_path / "snapshots"
    result = run_cli(
        *common(tmp_path, photos),
        "model=torchvision",
        "model.name=resnet18",
        f"model.weights={resnet18_file}",
        "trainer.max_epochs=3",
        "callbacks.backbone_finetuning.freeze_epochs=2",
        "+callbacks.weights_per_epoch._target_=tests.test_torchvision_net.WeightsPerEpoch",
        f"+callbacks.weights_per_epoch.folder={snapshots}",
        f"paths.output_dir={run_dir}",
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    given = torch.load(resnet18_file, weights_only=True)
    start, first, second, third = (torch.load(snapshots / f"{n}.pt") for n in ("start", "epoch0", "epoch1", "epoch2"))
    assert start["head.1.weight"].shape == (3, 512)  # three class folders, a new head
    # The file's weights, all but its 1,000-class layer, are where training starts.
    assert all(
        torch.equal(start[f"backbone.{key}"], value) for key, value in given.items() if not key.startswith("fc.")
    )
    assert "backbone.fc.weight" not in start
    convolutions = [k for k in start if k.endswith("conv1.weight") or k.endswith("conv2.weight")]

    def moved(before: dict, after: dict, keys: list[str]) -> list[str]:
        return [k for k in keys if not torch.equal(before[k], after[k])]

    # Frozen for two epochs: the head and the batch-norm layers train (Lightning's train_bn), the kernels do not.
    for before, after in ((start, first), (first, second)):
        assert moved(before, after, ["head.1.weight"]) == ["head.1.weight"]
        assert moved(before, after, convolutions) == []
        assert moved(before, after, ["backbone.bn1.weight"]) == ["backbone.bn1.weight"]
    # Unfrozen in the third: every kernel moves.
    assert moved(second, third, convolutions) == convolutions
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 3


class RecordRates(L.Callback):
    """Records the learning rate of every parameter group after every training step."""

    seen: list[list[float]] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.seen.append([group["lr"] for group in trainer.optimizers[0].param_groups])


def test_the_backbone_trains_at_a_fraction_of_the_heads_rate_following_the_schedule(photos, tmp_path, resnet18_file):
    """Unfrozen, the backbone's group joins the optimiser, and the cosine schedule moves its rate with the head's, at
    `backbone_lr_ratio` of it."""
    from experiments.core.config import compose
    from experiments.run.task import train

    RecordRates.seen = []
    cfg = compose(
        [
            *common(tmp_path, photos),
            "model=torchvision",
            f"model.weights={resnet18_file}",
            "trainer.max_epochs=3",
            "test=false",
            "callbacks.backbone_finetuning.freeze_epochs=1",
            "callbacks.backbone_finetuning.backbone_lr_ratio=0.25",
            "+callbacks.rates._target_=tests.test_torchvision_net.RecordRates",
            f"paths.output_dir={tmp_path / 'run'}",
        ]
    )
    train(cfg)
    rates = RecordRates.seen
    frozen, unfrozen = [r for r in rates if len(r) == 2], [r for r in rates if len(r) == 3]
    assert frozen and unfrozen and rates == frozen + unfrozen
    assert all(r[2] == pytest.approx(0.25 * r[0]) for r in unfrozen)
    assert unfrozen[-1][0] < unfrozen[0][0]  # the head's schedule still decays, the backbone's with it


def test_grey_and_small_images_are_brought_to_three_channels_and_the_asked_size():
    net = TorchvisionNet({"kind": "image", "shape": [1, 20, 20], "num_classes": 4}, "resnet18", None, image_size=40)
    seen = []
    net.backbone.conv1.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    assert net(torch.randn(2, 1, 20, 20)).shape == (2, 4)
    assert seen == [(2, 3, 40, 40)]


def test_the_data_normalises_with_the_weights_statistics_grey_with_their_average():
    imagenet = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    digits = DigitsDataModule(normalization=imagenet)  # 1 channel, pixels 0..16
    mean, std = digits.statistics()
    assert mean == pytest.approx((16 * 0.449,)) and std == pytest.approx((16 * 0.226,))


def test_model_torchvision_sets_the_image_datas_normalisation(make_config):
    cfg = make_config("model=torchvision", "data=cifar10")
    assert list(cfg.data.normalization.mean) == [0.485, 0.456, 0.406]
    assert make_config("model=cnn", "data=cifar10").data.normalization is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.name=resnet_18"], "model.name='resnet_18' is not a torchvision classification model"),
        (["model.name=fasterrcnn_resnet50_fpn"], "is not a torchvision classification model"),
        (["model.weights=ResNet50_Weights.IMAGENET1K_V1"], "are weights of another architecture, not resnet18's"),
        (["model.weights=IMAGENET1K_V9"], "resnet18 has no such weights; choose from DEFAULT, IMAGENET1K_V1"),
        (["model.weights=no/such/file.pt"], "no such file, and not a torchvision weights name"),
        (["model.weights=resnet18.pt"], "model.weights=resnet18.pt: no such file"),
    ],
)
def test_names_and_weights_it_cannot_use_are_one_line(overrides, message, photos, tmp_path, monkeypatch, capsys):
    line = error_line_leaving_nothing(
        tmp_path, monkeypatch, capsys, "model=torchvision", f"data.root={photos}", "data=image_folder", *overrides
    )
    assert message in line


def test_weights_of_another_architecture_in_a_file_are_one_line(photos, tmp_path, monkeypatch, capsys):
    path = tmp_path / "resnet34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), path)
    line = error_line_leaving_nothing(
        tmp_path,
        monkeypatch,
        capsys,
        "model=torchvision",
        "data=image_folder",
        f"data.root={photos}",
        f"model.weights={path}",
    )
    assert line.startswith(f"model.weights={path} are not weights of resnet18: ")


@pytest.mark.slow
def test_default_weights_offline_and_not_in_the_cache_are_one_line_naming_the_file(photos, tmp_path):
    closed = "http://127.0.0.1:9"  # nothing listens: every download fails at once, as offline
    env = {"TORCH_HOME": str(tmp_path / "torch"), "https_proxy": closed, "HTTPS_PROXY": closed}
    result = run_cli(*common(tmp_path, photos), "model=torchvision", "model.weights=DEFAULT", cwd=tmp_path, env=env)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    assert lines[0].startswith(f"error: model.weights=DEFAULT: resnet18-f37072fd.pth is not in torch's cache ({cache})")
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in lines[0]


def test_a_damaged_file_in_torchs_cache_is_one_line_saying_to_delete_it(tmp_path, monkeypatch):
    from experiments.core.errors import UserError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"half a download")
    with pytest.raises(UserError, match=f"model.weights=DEFAULT: {cached} cannot be read .*; delete it to download"):
        TorchvisionNet({"kind": "image", "shape": [3, 32, 32], "num_classes": 2}, "resnet18", "DEFAULT")


def test_a_vision_transformer_gets_the_one_size_it_takes():
    net = TorchvisionNet({"kind": "image", "shape": [3, 32, 32], "num_classes": 2}, "vit_b_16", None)
    assert net.image_size == 224
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_a_run_resumed_after_its_backbone_was_unfrozen_ends_as_an_uninterrupted_one(make_config, tmp_path):
    """The backbone's parameter group, added when it was unfrozen, comes back with the resumed run (Lightning's
    BaseFinetuning state) and rejoins the schedule: the same weights at the end as a run never stopped."""
    from experiments.run.task import train

    # A constant rate: a cosine schedule would depend on max_epochs, which the cut run changes.
    settings = ["data=digits", "model=torchvision", "model.weights=null", "logger=none", "deterministic=true"]
    settings.append("scheduler=constant")
    whole = make_config(*settings, "trainer.max_epochs=3", f"paths.output_dir={tmp_path / 'whole'}")
    train(whole)
    train(make_config(*settings, "trainer.max_epochs=2", f"paths.output_dir={tmp_path / 'cut'}"))
    resumed = make_config(
        *settings,
        "trainer.max_epochs=3",
        f"paths.output_dir={tmp_path / 'cut'}",
        f"resume={tmp_path / 'cut' / 'checkpoints' / 'last.ckpt'}",
    )
    train(resumed)
    ends = [torch.load(tmp_path / run / "checkpoints" / "last.ckpt")["state_dict"] for run in ("whole", "cut")]
    assert ends[0].keys() == ends[1].keys()
    worst = max((ends[0][k].float() - ends[1][k].float()).abs().max().item() for k in ends[0])
    assert all(torch.equal(ends[0][key], ends[1][key]) for key in ends[0]), worst
