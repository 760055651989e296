"""Train, compare and sweep MLPs, CNNs and RNNs with Hydra and Lightning: `python -m experiments`.

The folders are the layers, top to bottom; a module imports from its own folder and the folders below it,
never from one above (tests/test_architecture.py holds the package to it):

    commands/   one module per command of `experiments` (train, evaluate, predict) and the dispatcher
    run/        a job: the train task, the Trainer, sweeps, recovery and stop signals, a finished run loaded back
    reporting/  what a run tells people: one class per logger, the dashboards' figures, progress and throughput
    models/     the one LightningModule, the tasks it learns, its optimisers and schedules, the nets
    data/       one LightningDataModule per dataset, and the in-memory batching they share
    core/       what everything may import: errors, atomic writes, the run directory, value rules, building
                from `_target_`, the config, the fenced Lightning internals
"""

LAYERS = ("commands", "run", "reporting", "models", "data", "core")
