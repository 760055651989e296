"""One LightningDataModule per dataset, all built on the in-memory batching of `in_memory`."""

from experiments.data.digits import DigitsDataModule

__all__ = ["DigitsDataModule"]
