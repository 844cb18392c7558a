"""thaw: hyperparameter search and diagnosis for fine-tuning pretrained Keras models.

The import packages are ``thaw.search`` (study files, orchestration, CLI), ``thaw.objectives``
(everything Keras: build, freeze, train) and ``thaw.reports`` (reads storage only, never Keras).
Importing ``thaw`` loads neither Keras nor TensorFlow.
"""

from thaw._version import __version__

__all__ = ["__version__"]
