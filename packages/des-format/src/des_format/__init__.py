"""The DES shard format: streaming writer, I/O-free reader core, codecs, checksums. Standard
library only.
"""

__all__: list[str] = []
