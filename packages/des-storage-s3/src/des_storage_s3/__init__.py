"""DES on S3: range-read object store, multipart shard upload, multi-zone store, S3 source
reader.
"""

__all__: list[str] = []
