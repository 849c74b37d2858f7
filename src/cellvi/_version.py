"""The installed version of cellvi."""

__version__ = "0.1.0"
