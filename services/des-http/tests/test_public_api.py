"""The public API of des-http, pinned: changing it is a decision, not an accident."""

from __future__ import annotations

import inspect

import des_http


def test_public_names() -> None:
    assert sorted(des_http.__all__) == sorted(
        [
            "ERROR_TABLE",
            "BatchItem",
            "BatchRequest",
            "ConfigError",
            "HttpSettings",
            "ProblemKind",
            "RangeKind",
            "RangePlan",
            "Scope",
            "ServiceMetrics",
            "TokenRecord",
            "TokenTable",
            "__version__",
            "app",
            "create_app",
            "parse_token_file",
            "plan_problem",
            "plan_range",
            "read_token_file",
            "serialize_content_range",
        ]
    )


def test_create_app_signature() -> None:
    sig = inspect.signature(des_http.create_app)
    assert list(sig.parameters) == [
        "settings",
        "retriever",
        "registry",
        "store",
        "tokens",
        "editor",
        "async_retriever",
        "tracer_provider",
    ]
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in list(sig.parameters.values())[1:])


def test_importing_does_not_build_an_app() -> None:
    assert "app" not in vars(des_http)


def test_error_table_statuses() -> None:
    table = {exc.__name__: kind.status for exc, kind in des_http.ERROR_TABLE}
    assert table == {
        "InvalidUid": 400,
        "InvalidCreatedAt": 400,
        "RoutingError": 400,
        "RequestValidationError": 400,
        "BodyTooLarge": 413,
        "UriTooLong": 414,
        "BadRequest": 400,
        "Unauthorized": 401,
        "Forbidden": 403,
        "EntryNotFound": 404,
        "ObjectNotFound": 404,
        "EntryDeleted": 410,
        "BatchTooLarge": 413,
        "RangeNotSatisfiableForFile": 416,
        "StorageUnavailable": 503,
        "PreconditionFailed": 503,
        "StoreLayoutChanged": 503,
        "NotReady": 503,
        "ChecksumMismatch": 500,
        "CodecNotInstalled": 500,
        "CorruptShard": 500,
        "UnknownCodec": 500,
        "UnsupportedFormatVersion": 500,
        "RangeNotSatisfiable": 500,
        "StoreError": 502,
        "DesFormatError": 500,
    }


def test_table_lists_subclasses_before_their_bases() -> None:
    types = [exc for exc, _ in des_http.ERROR_TABLE]
    for i, earlier in enumerate(types):
        for later in types[i + 1 :]:
            assert not issubclass(later, earlier), f"{later.__name__} shadowed by {earlier}"
