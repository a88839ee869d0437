"""scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): always available offline."""

from __future__ import annotations

import numpy as np

from .arrays import ArrayDataset, as_labels, normalise, stratified_subset

__all__ = ["load_digits"]


def load_digits(
    *, train_limit: int | None = None, test_limit: int | None = None, seed: int = 0
) -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits: seeded stratified 80/20 split, [0, 1] then standardised.

    The mean and standard deviation come from the train split and are stored in the result.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[:, None, :, :] / 16.0
    labels = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=0.2, stratify=labels, random_state=seed
    )
    mean, std = (float(x_tr.mean()),), (float(x_tr.std()),)
    x_tr, y_tr = stratified_subset(x_tr, y_tr, train_limit, seed)
    x_te, y_te = stratified_subset(x_te, y_te, test_limit, seed)
    return ArrayDataset(
        name="digits",
        x_train=normalise(x_tr, mean, std, 1.0),
        y_train=as_labels(y_tr),
        x_test=normalise(x_te, mean, std, 1.0),
        y_test=as_labels(y_te),
        num_classes=10,
        input_shape=(1, 8, 8),
        mean=mean,
        std=std,
    )
