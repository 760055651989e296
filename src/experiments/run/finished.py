"""A finished run, loaded back for evaluation and predictions: its checkpoint, its config with the user's
overrides composed on top, its data module and its model.

Overrides compose as on the command line: `key=value` changes a value of the run's own config, and
`group=option` (`data=mnist`) puts that option of conf/ in the place of the run's whole group, as a new run
would get it.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from experiments.core.errors import UserError
from experiments.core.run_dir import RunDir


def find_run(path: Path) -> tuple[RunDir, Path]:
    """A run directory or a checkpoint -> (its run, the checkpoint): a directory means its best checkpoint."""
    run = RunDir.of(path)
    if path.is_file():
        return run, path
    checkpoint = run.best_checkpoint() or run.last_checkpoint()
    if not checkpoint.is_file():
        raise UserError(f"{path} holds no checkpoint ({checkpoint} is missing); pass a .ckpt file")
    return run, checkpoint


def run_config(run: RunDir, overrides: list[str]) -> DictConfig:
    """The run's composed config with `overrides` on top: group choices first, then values."""
    from experiments.core.config import compose, config_dir

    cfg = run.config()
    groups, values = [], []
    for override in overrides:
        key, equals, _ = override.partition("=")
        if not equals:
            raise UserError(f"cannot parse the override '{override}': write key=value or group=option")
        is_group = "." not in key and (config_dir() / key.lstrip("+~")).is_dir()
        (groups if is_group else values).append(override)
    if groups:
        chosen = compose(groups)  # conf/ with those choices: their nodes replace the run's
        for override in groups:
            group = override.partition("=")[0].lstrip("+~")
            cfg[group] = chosen[group]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(values))


def load_model(checkpoint: Path, state: dict | None = None):
    """The Model in a checkpoint: rebuilt from the hyperparameters inside it (plain values only, read
    weights-only; a bad file is one line), its net's and its task's classes imported by their dotted paths."""
    from experiments.models.model import Model
    from experiments.models.nets.torchvision_net import checkpoint_holds_weights
    from experiments.run.recovery import load_checkpoint

    state = state or load_checkpoint(checkpoint, map_location="cpu")
    with checkpoint_holds_weights():  # no pretrained weights fetched for a net whose every weight is in the file
        model = Model(**state["hyper_parameters"])
    model.load_state_dict(state["state_dict"])
    return model.eval()


def load(path: Path, overrides: list[str]):
    """(config, data module, model, checkpoint) of the run at `path`, as it was trained, with `overrides`.

    What the data module learnt from its training data and saved in the checkpoint (Lightning's
    `LightningDataModule.state_dict`, under the module's class name: a table's column statistics) is put back,
    so that new inputs are read as the training inputs were."""
    from experiments.run.recovery import load_checkpoint

    run, checkpoint = find_run(path)
    cfg = run_config(run, overrides)
    state = load_checkpoint(checkpoint, map_location="cpu")
    datamodule = build_data(cfg)
    learnt = state.get(type(datamodule).__qualname__)
    if learnt:
        datamodule.load_state_dict(learnt)
    return cfg, datamodule, load_model(checkpoint, state), checkpoint


def build_data(cfg: DictConfig):
    """The run's data module. Runs written before data modules that download nothing stopped taking `download`
    (the digits, image folders, CSV texts) carry `data.download: true` in their config: it is left out for a
    module that does not take it, so that those runs still evaluate and predict."""
    import lightning as L

    from experiments.core.build import component

    data = component(cfg.data, "data", L.LightningDataModule)
    return (data if data.accepts("download") else data.without("download")).build()


def evaluation_trainer(cfg: DictConfig, progress: bool = False, callbacks: list | None = None):
    """A Trainer for testing and predicting: one device, the run's accelerator and precision, nothing written."""
    import lightning as L

    from experiments.run.trainer import pick_precision, quiet_lightning

    quiet_lightning()
    return L.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        precision=pick_precision(cfg.trainer),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        callbacks=callbacks,
    )
