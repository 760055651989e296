"""One LightningDataModule per dataset, all built on the in-memory batching of `in_memory`."""

from experiments.data.cifar10 import CIFAR10DataModule
from experiments.data.digits import DigitsDataModule
from experiments.data.image_folder import ImageFolderDataModule
from experiments.data.imdb import IMDBDataModule
from experiments.data.mnist import MNISTDataModule
from experiments.data.table import BundledTableDataModule, TableCSVDataModule
from experiments.data.text_csv import TextCSVDataModule

__all__ = [
    "BundledTableDataModule",
    "CIFAR10DataModule",
    "DigitsDataModule",
    "IMDBDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "TableCSVDataModule",
    "TextCSVDataModule",
]
