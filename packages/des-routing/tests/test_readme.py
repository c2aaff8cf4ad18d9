"""The README's examples run as written."""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples() -> None:
    result = doctest.testfile(
        str(README), module_relative=False, optionflags=doctest.ELLIPSIS, verbose=False
    )
    assert result.attempted >= 15
    assert result.failed == 0


def test_readme_zones_file_is_valid(tmp_path: Path) -> None:
    from des_routing import S3Credentials, load_zones

    pytest.importorskip("yaml", reason="YAML zones files need PyYAML: des-routing[yaml]")

    text = README.read_text()
    block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "zones.yaml"
    path.write_text(block)
    zones = load_zones(path, env={"ZONE_A_KEY_ID": "AKIA1", "ZONE_A_SECRET": "s"})
    assert [(z.name, z.start, z.end) for z in zones.zones] == [
        ("zone-a", 0, 127),
        ("zone-b", 128, 255),
    ]
    assert zones.zones[0].s3.credentials == S3Credentials("AKIA1", "s")
