"""S3 (and multi-zone S3) destinations, built on des-storage-s3."""

from __future__ import annotations

from ._dest import Destination
from ._errors import PackConfigError
from ._options import PackOptions

__all__ = ["open_s3_destination"]


def open_s3_destination(output: str, options: PackOptions) -> Destination:
    raise PackConfigError(
        f"S3 output ({output}) is not available in this build yet; pack to a directory"
    )
