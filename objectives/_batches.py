"""Batches decoded from image files as training goes, for data larger than memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np

from thaw.objectives._images import StreamedImages


class FileBatches(keras.utils.PyDataset):
    """``(images, labels)`` batches decoded and preprocessed on demand; seeded shuffling."""

    def __init__(
        self,
        data: StreamedImages,
        files: tuple[Path, ...],
        labels: np.ndarray,
        batch_size: int,
        preprocess: Callable[[np.ndarray], np.ndarray],
        shuffle_seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._data = data
        self._files = files
        self._labels = labels
        self._batch_size = batch_size
        self._preprocess = preprocess
        self._rng = None if shuffle_seed is None else np.random.default_rng(shuffle_seed)
        self._order = np.arange(len(files))
        self.on_epoch_end()

    def __len__(self) -> int:
        return int(np.ceil(len(self._files) / self._batch_size))

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        idx = self._order[index * self._batch_size : (index + 1) * self._batch_size]
        images = self._data.decode(tuple(self._files[i] for i in idx))
        return self._preprocess(images), self._labels[idx]

    def on_epoch_end(self) -> None:
        if self._rng is not None:
            self._rng.shuffle(self._order)
