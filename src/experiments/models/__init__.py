"""The one LightningModule (model.py), the tasks it learns (tasks.py), its optimisers (optim.py), the nets (nets/)."""
