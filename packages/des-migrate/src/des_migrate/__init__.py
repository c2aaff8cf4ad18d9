"""DES migration: move files out of a business database into DES shards, safely."""

__all__: list[str] = []
