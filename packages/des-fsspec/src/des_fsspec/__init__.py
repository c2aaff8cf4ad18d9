"""DES for fsspec: ``des://YYYYMMDD/uid`` (registered through fsspec's ``fsspec.specs`` entry
point, so ``fsspec.open("des://20240101/uid-123")`` works once this is installed)."""

from ._fs import STORAGE_OPTIONS, DesFile, DesFileSystem, settings_from_options

#: The installed distribution's version (read from its metadata on first use).
__version__: str


def __getattr__(name: str) -> object:
    if name == "__version__":
        from importlib.metadata import version

        value = version("des-fsspec")
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["STORAGE_OPTIONS", "DesFile", "DesFileSystem", "__version__", "settings_from_options"]
