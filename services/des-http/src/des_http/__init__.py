"""DES retrieval service: GET /files/{uid} over FastAPI, with Range, ETag, metrics and optional
auth.
"""

__all__: list[str] = []
