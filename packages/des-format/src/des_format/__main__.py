"""``python -m des_format``: list, extract and verify shard files."""

from ._cli import main

raise SystemExit(main())
