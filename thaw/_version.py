"""The one version string of thaw (the distribution ``thaw-keras``)."""

__version__ = "0.2.0"
