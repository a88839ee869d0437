"""Offline data sets (CIFAR-10 npz, scikit-learn digits, Fashion-MNIST) and accuracy evaluation.

One module per role: :mod:`.shared` (the ``shared`` folder), :mod:`.arrays` (``ArrayDataset`` and
stratified subsets), :mod:`.cifar10`, :mod:`.digits`, :mod:`.fashion_mnist` (one loader each),
:mod:`.datasets` (``load_dataset`` by name, and every name above for older imports) and
:mod:`.evaluate` (top-1 accuracy).
"""

from requant_plugin.data.arrays import ArrayDataset, stratified_indices
from requant_plugin.data.cifar10 import CIFAR10_DIR_ENV, CIFAR10_MEAN, CIFAR10_STD, cifar10_available, load_cifar10
from requant_plugin.data.datasets import DATASET_NAMES, default_dataset, default_dataset_name, load_dataset
from requant_plugin.data.digits import load_digits
from requant_plugin.data.evaluate import evaluate_accuracy, model_device
from requant_plugin.data.fashion_mnist import (
    FASHION_MNIST_DIR_ENV,
    fashion_mnist_available,
    find_fashion_mnist_dir,
    load_fashion_mnist,
    read_idx,
)
from requant_plugin.data.shared import SHARED_DIR_ENV, find_shared_dir

__all__ = [
    "CIFAR10_DIR_ENV",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATASET_NAMES",
    "FASHION_MNIST_DIR_ENV",
    "SHARED_DIR_ENV",
    "ArrayDataset",
    "cifar10_available",
    "default_dataset",
    "default_dataset_name",
    "evaluate_accuracy",
    "fashion_mnist_available",
    "find_fashion_mnist_dir",
    "find_shared_dir",
    "load_cifar10",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "model_device",
    "read_idx",
    "stratified_indices",
]
