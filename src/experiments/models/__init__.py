"""The one `Classifier` LightningModule (classifier.py), its optimisers (optim.py) and the plain nets (nets/)."""
