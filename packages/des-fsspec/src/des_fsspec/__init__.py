"""DES for fsspec: ``des://YYYYMMDD/uid`` (registered through fsspec's ``fsspec.specs`` entry
point, so ``fsspec.open("des://20240101/uid-123")`` works once this is installed)."""

from ._fs import STORAGE_OPTIONS, DesFile, DesFileSystem, settings_from_options

__version__ = "0.1.0"

__all__ = ["STORAGE_OPTIONS", "DesFile", "DesFileSystem", "__version__", "settings_from_options"]
