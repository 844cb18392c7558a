"""Compatibility module: the diagnosis lives in the ``thaw.reports.diagnosis`` package."""

from thaw.reports.diagnosis import *  # noqa: F403
from thaw.reports.diagnosis import __all__  # noqa: F401
