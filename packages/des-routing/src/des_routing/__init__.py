"""DES routing: (uid, created_at, n_bits) -> shard location, zone maps and settings. Standard
library only.
"""

__all__: list[str] = []
