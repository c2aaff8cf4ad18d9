"""Every exception a DES package defines sits under that package's one base class, so a
caller can catch everything a package raises with one ``except``."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

# (package, module defining the base, base name); des_fsspec defines no exception of its own.
BASES = [
    ("des_format", "des_format", "DesFormatError"),
    ("des_routing", "des_routing", "RoutingError"),
    ("des_storage_s3", "des_storage_s3", "S3StoreError"),
    ("des_packer", "des_packer", "PackerError"),
    ("des_migrate", "des_migrate", "MigrateError"),
    ("des_http", "des_http._problems", "ServiceError"),
    ("des_testing", "des_testing", "DesTestingError"),
]


def _exceptions_defined_in(package: str) -> list[type[BaseException]]:
    root = importlib.import_module(package)
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__.split(".")[0] == package:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


@pytest.mark.parametrize(("package", "module", "base_name"), BASES, ids=[b[0] for b in BASES])
def test_every_exception_is_under_the_package_base(
    package: str, module: str, base_name: str
) -> None:
    base = getattr(importlib.import_module(module), base_name)
    defined = _exceptions_defined_in(package)
    assert base in defined
    outside = sorted(
        f"{cls.__module__}.{cls.__qualname__}" for cls in defined if not issubclass(cls, base)
    )
    assert outside == [], f"not under {package}.{base_name}: {outside}"
