"""One class per logger, each Lightning's own logger with what it keeps of a run beyond the curves.

    tensorboard.py  TensorBoard (the default): figures, tables, the HParams tab
    csv.py          CSV files
    mlflow.py       MLflow: a local store or a server, one experiment per sweep; a server lost mid-run is left
    wandb.py        Weights & Biases, offline by default, one group per sweep
    base.py         `RunLogger`, what a run tells a logger (each method with a default), and what they share

Every logger holds the same record of a run:
- its params are the composed config, flattened to dotted keys (`model.channels`): `RunLogger.log_config`;
- the run's `tags` and `notes` (top-level config keys) go where each tracker shows them;
- a sweep's jobs are runs named by their overrides, side by side in one place (an MLflow experiment, a W&B group);
- the dashboards' figures reach every logger that takes them (`add_figure`, `add_table`; reporting/dashboards.py);
- at the end, the run's metrics.json and composed config are stored with it: `store_run_files`, then `finish`.
MLflow and W&B are an extra (`pip install 'experiments[tracking]'`); without it, choosing one is one line saying so.
docs/extending.md shows a logger of your own.
"""
