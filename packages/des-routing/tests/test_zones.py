"""Zone maps: parsing JSON and YAML, every validation error, lookup by binary search."""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from des_routing import (
    InvalidShardKey,
    S3Credentials,
    Zone,
    ZoneConfigError,
    ZoneMap,
    ZoneNotFound,
    ZoneS3,
    expand_env,
    load_zones,
    locate_shard,
    parse_zones,
)
from hypothesis import given, settings
from hypothesis import strategies as st

ZONE_A = Zone(
    "zone-a", 0, 127, ZoneS3("des-zone-a", "us-east-1", "https://s3.example.com", "des-a/")
)
ZONE_B = Zone(
    "zone-b", 128, 255, ZoneS3("des-zone-b", "us-east-1", "https://s3.example.com", "des-b/")
)


def test_readme_yaml_and_json_give_the_same_map(
    tmp_path: Path, zones_yaml: str, zones_obj: dict[str, Any]
) -> None:
    yaml_file = tmp_path / "zones.yaml"
    yaml_file.write_text(zones_yaml)
    json_file = tmp_path / "zones.json"
    json_file.write_text(json.dumps(zones_obj))
    expected = ZoneMap(n_bits=8, zones=(ZONE_A, ZONE_B))
    assert load_zones(yaml_file) == expected
    assert load_zones(json_file) == expected
    assert parse_zones(zones_obj) == expected


def test_json_sniffed_for_other_suffixes(
    tmp_path: Path, zones_obj: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # JSON must not need PyYAML
    conf = tmp_path / "zones.conf"
    conf.write_text("\n  " + json.dumps(zones_obj))
    assert load_zones(conf).zones == (ZONE_A, ZONE_B)


def test_yaml_sniffed_for_other_suffixes(tmp_path: Path, zones_yaml: str) -> None:
    conf = tmp_path / "zones.conf"
    conf.write_text(zones_yaml)
    assert load_zones(conf).zones == (ZONE_A, ZONE_B)


def test_zone_for_uses_ranges(zones_obj: dict[str, Any]) -> None:
    zones = parse_zones(zones_obj)
    assert zones.zone_for(0) is zones.zones[0]
    assert zones.zone_for(127).name == "zone-a"
    assert zones.zone_for(128).name == "zone-b"
    assert zones.zone_for(255).name == "zone-b"
    assert zones.zone_for_key("20240101/7F.des").name == "zone-a"
    assert zones.zone_for_key("20240101/80.p3.des").name == "zone-b"
    assert zones.zone_named("zone-b") == ZONE_B
    loc = locate_shard("uid-123", "2024-01-01T00:00:00Z")  # shard 0xCE
    assert zones.zone_for(loc.shard_index).s3.bucket == "des-zone-b"
    assert 127 in ZONE_A
    assert 128 not in ZONE_A


def test_zone_for_errors(zones_obj: dict[str, Any]) -> None:
    zones = parse_zones(zones_obj)
    with pytest.raises(ZoneNotFound) as info:
        zones.zone_for(256)
    assert str(info.value) == "shard index 256 is outside 0..255 (n_bits=8)"
    with pytest.raises(ZoneNotFound, match=r"^shard index -1 is outside 0\.\.255"):
        zones.zone_for(-1)
    with pytest.raises(ZoneNotFound, match=r"^shard index must be an int, got str$"):
        zones.zone_for("1")  # type: ignore[arg-type]
    with pytest.raises(InvalidShardKey, match="is a big-file key: it names no shard index"):
        zones.zone_for_key("20240101/_bigFiles/" + "0" * 64)
    with pytest.raises(ZoneNotFound) as info:
        zones.zone_named("zone-c")
    assert str(info.value) == "no zone named 'zone-c'; zones: ['zone-a', 'zone-b']"
    assert isinstance(info.value, LookupError)


def test_zones_are_sorted_whatever_the_file_order(zones_obj: dict[str, Any]) -> None:
    zones_obj["zones"].reverse()
    assert parse_zones(zones_obj).zones == (ZONE_A, ZONE_B)


def test_allow_gaps(zones_obj: dict[str, Any]) -> None:
    zones_obj["allow_gaps"] = True
    zones_obj["zones"][0]["range"] = {"start": 10, "end": 99}
    zones = parse_zones(zones_obj)
    assert zones.allow_gaps is True
    assert zones.zone_for(10).name == "zone-a"
    for index in (0, 9, 100, 127):
        with pytest.raises(ZoneNotFound) as info:
            zones.zone_for(index)
        assert str(info.value) == (
            f"no zone serves shard index {index} (0x{index:X}): the zones config leaves it "
            "uncovered (allow_gaps: true)"
        )


def test_n_bits_from_caller_and_mismatch(zones_obj: dict[str, Any]) -> None:
    del zones_obj["n_bits"]
    assert parse_zones(zones_obj).n_bits == 8  # default
    assert parse_zones(zones_obj, n_bits=8).n_bits == 8
    with pytest.raises(ZoneConfigError) as info:
        parse_zones(zones_obj, n_bits=9)
    assert str(info.value) == (
        "zones leave shard indexes uncovered: 256..511 (after zone 'zone-b'); cover [0, 511] "
        "or set 'allow_gaps: true'"
    )
    zones_obj["n_bits"] = 8
    with pytest.raises(ZoneConfigError) as info:
        parse_zones(zones_obj, n_bits=12)
    assert str(info.value) == (
        "zones config: n_bits is 8 but the shards are routed with n_bits=12; the two must match"
    )


def test_sixteen_bits_many_zones() -> None:
    width = 4096
    obj = {
        "n_bits": 16,
        "zones": [
            {
                "name": f"z{i}",
                "range": {"start": i * width, "end": (i + 1) * width - 1},
                "s3": {"bucket": f"b{i}"},
            }
            for i in range(16)
        ],
    }
    zones = parse_zones(obj)
    assert zones.zone_for(0xFFFF).name == "z15"
    assert zones.zone_for(0x1000).name == "z1"
    assert zones.zone_for(0x0FFF).name == "z0"


# --- validation errors ----------------------------------------------------------------------


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node: Any = obj
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is _DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        # overlap, range, gap
        (
            "zones.1.range.start",
            100,
            "zones 'zone-a' (0..127) and 'zone-b' (100..255) overlap on shard indexes 100..127",
        ),
        (
            "zones.1.range",
            {"start": 10, "end": 20},
            "zones 'zone-a' (0..127) and 'zone-b' (10..20) overlap on shard indexes 10..20",
        ),
        (
            "zones.1.range.end",
            256,
            "zone 'zone-b': range 128..256 is outside [0, 255] (n_bits=8)",
        ),
        ("zones.0.range.start", -1, "zone 'zone-a': range -1..127 is outside [0, 255] (n_bits=8)"),
        (
            "zones.1.range.start",
            300,
            "zone 'zone-b': range start 300 is greater than end 255",
        ),
        (
            "zones.1.range.start",
            130,
            "zones leave shard indexes uncovered: 128..129 (before zone 'zone-b'); cover "
            "[0, 255] or set 'allow_gaps: true'",
        ),
        (
            "zones.1.range.end",
            250,
            "zones leave shard indexes uncovered: 251..255 (after zone 'zone-b'); cover "
            "[0, 255] or set 'allow_gaps: true'",
        ),
        (
            "zones.0.range.start",
            1,
            "zones leave shard indexes uncovered: 0..0 (before zone 'zone-a'); cover [0, 255] "
            "or set 'allow_gaps: true'",
        ),
        ("zones.1.name", "zone-a", "zone 'zone-a': the name is used by more than one zone"),
        ("zones", [], "zones config: 'zones' must list at least one zone"),
        # missing keys
        ("zones", _DELETE, "zones config: missing required key(s) 'zones'"),
        ("zones.1.range", _DELETE, "zone 'zone-b': missing required key(s) 'range'"),
        ("zones.1.s3", _DELETE, "zone 'zone-b': missing required key(s) 's3'"),
        ("zones.1.range.end", _DELETE, "zone 'zone-b': range: missing required key(s) 'end'"),
        ("zones.0.s3.bucket", _DELETE, "zone 'zone-a': s3: missing required key(s) 'bucket'"),
        (
            "zones.0.name",
            _DELETE,
            "zones[0]: 'name' must be a non-empty string, got null None",
        ),
        # unknown keys
        (
            "zones.0.s3.regoin_name",
            "x",
            "zone 'zone-a': s3: unknown key(s) 'regoin_name'; allowed: bucket, credentials, "
            "endpoint_url, prefix, region_name",
        ),
        (
            "zone",
            [],
            "zones config: unknown key(s) 'zone'; allowed: allow_gaps, n_bits, zones",
        ),
        # wrong types
        ("n_bits", "8", "zones config: 'n_bits' must be an integer, got str '8'"),
        (
            "n_bits",
            20,
            "zones config: n_bits must be within 4..16 (16..65536 shards per day), got 20",
        ),
        ("zones", {"name": "a"}, "zones config: 'zones' must be a list of zones, got dict"),
        ("zones.0", "zone-a", "zones[0] must be a mapping, got str"),
        ("zones.0.name", 7, "zones[0]: 'name' must be a non-empty string, got int 7"),
        ("zones.0.name", " ", "zones[0]: 'name' must be a non-empty string, got str ' '"),
        ("zones.0.range", [0, 127], "zone 'zone-a': 'range' must be a mapping, got list"),
        ("zones.0.range.end", "127", "zone 'zone-a': range.end must be an integer, got str '127'"),
        (
            "zones.0.range.end",
            127.0,
            "zone 'zone-a': range.end must be an integer, got float 127.0",
        ),
        (
            "zones.0.range.start",
            False,
            "zone 'zone-a': range.start must be an integer, got bool False",
        ),
        ("zones.0.s3", None, "zone 'zone-a': 's3' must be a mapping, got null"),
        ("zones.0.s3.bucket", 5, "zone 'zone-a': s3.bucket must be a string, got int 5"),
        ("zones.0.s3.bucket", "", "zone 'zone-a': s3.bucket must be a non-empty string"),
        (
            "zones.0.s3.prefix",
            "/des-a/",
            "zone 'zone-a': s3.prefix '/des-a/' must not start with '/'",
        ),
        ("allow_gaps", "yes", "zones config: 'allow_gaps' must be true or false, got str 'yes'"),
        (
            "zones.0.s3.credentials",
            {"access_key_id": "AKIA"},
            "zone 'zone-a': s3.credentials needs both access_key_id and secret_access_key (or "
            "neither, with profile_name or the default credential chain)",
        ),
        (
            "zones.0.s3.credentials",
            {"session_token": "t"},
            "zone 'zone-a': s3.credentials.session_token needs access_key_id and secret_access_key",
        ),
        (
            "zones.0.s3.credentials",
            {"password": "p"},
            "zone 'zone-a': s3.credentials: unknown key(s) 'password'; allowed: access_key_id, "
            "profile_name, secret_access_key, session_token",
        ),
        (
            "zones.0.s3.credentials",
            "AKIA:secret",
            "zone 'zone-a': s3.credentials must be a mapping, got str",
        ),
    ],
)
def test_zone_config_errors(zones_obj: dict[str, Any], path: str, value: Any, message: str) -> None:
    _set(zones_obj, path, value)
    with pytest.raises(ZoneConfigError) as info:
        parse_zones(zones_obj, env={})
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_top_level_must_be_a_mapping() -> None:
    with pytest.raises(ZoneConfigError, match=r"^zones config must be a mapping, got list$"):
        parse_zones([])
    with pytest.raises(ZoneConfigError, match=r"^zones config must be a mapping, got null$"):
        parse_zones(None)


def test_zone_map_validates_direct_construction() -> None:
    with pytest.raises(ZoneConfigError, match=r"overlap on shard indexes 0\.\.127"):
        ZoneMap(n_bits=8, zones=(ZONE_A, Zone("zone-x", 0, 255, ZONE_A.s3)))
    with pytest.raises(ZoneConfigError, match=r"^zones config: n_bits must be within 4\.\.16"):
        ZoneMap(n_bits=3, zones=(ZONE_A,))


# --- files ----------------------------------------------------------------------------------


def test_truncated_json_file(tmp_path: Path, zones_obj: dict[str, Any]) -> None:
    path = tmp_path / "zones.json"
    path.write_text(json.dumps(zones_obj)[:60])
    with pytest.raises(ZoneConfigError) as info:
        load_zones(path)
    assert str(info.value) == (
        f"zones file {str(path)!r} is not valid JSON: Expecting ':' delimiter at line 1 column 61"
    )


def test_truncated_yaml_file(tmp_path: Path, zones_yaml: str) -> None:
    path = tmp_path / "zones.yaml"
    path.write_text(zones_yaml[: zones_yaml.index("end: 127") + 5])
    with pytest.raises(ZoneConfigError) as info:
        load_zones(path)
    assert str(info.value) == (
        f"zones file {str(path)!r} is not valid YAML: expected the node content, but found "
        "'<stream end>' at line 4 column 29"
    )


def test_truncated_yaml_that_still_parses_is_named_in_the_error(
    tmp_path: Path, zones_yaml: str
) -> None:
    path = tmp_path / "zones.yml"
    path.write_text(zones_yaml[: zones_yaml.index("  - name: zone-b")])
    with pytest.raises(ZoneConfigError) as info:
        load_zones(path)
    assert str(info.value) == (
        f"zones file {str(path)!r}: zones leave shard indexes uncovered: 128..255 (after zone "
        "'zone-a'); cover [0, 255] or set 'allow_gaps: true'"
    )


def test_missing_empty_and_binary_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ZoneConfigError) as info:
        load_zones(missing)
    assert str(info.value) == f"zones file {str(missing)!r} does not exist"
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    with pytest.raises(ZoneConfigError) as info:
        load_zones(empty)
    assert str(info.value) == f"zones file {str(empty)!r} is empty"
    binary = tmp_path / "zones.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ZoneConfigError, match=r"^cannot read zones file .*zones\.bin"):
        load_zones(binary)
    with pytest.raises(ZoneConfigError, match=r"^cannot read zones file"):
        load_zones(tmp_path)  # a directory


def test_yaml_without_pyyaml_names_the_extra(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    zones_yaml_text: str,
    zones_obj: dict[str, Any],
) -> None:
    path = tmp_path / "zones.yaml"
    path.write_text(zones_yaml_text)
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    with pytest.raises(ZoneConfigError) as info:
        load_zones(path)
    assert str(info.value) == (
        f"zones file {str(path)!r} is YAML but PyYAML is not installed: "
        "pip install 'des-routing[yaml]' (or write the zones file as JSON)"
    )
    json_path = tmp_path / "zones.json"
    json_path.write_text(json.dumps(zones_obj))
    assert load_zones(json_path).zones == (ZONE_A, ZONE_B)  # JSON needs no extra


# --- credentials and ${VAR} expansion ---------------------------------------------------------


def test_credentials_expand_environment_variables(tmp_path: Path, zones_yaml: str) -> None:
    path = tmp_path / "zones.yaml"
    path.write_text(
        zones_yaml.replace(
            "      prefix: des-a/\n",
            "      prefix: des-a/\n"
            "      credentials:\n"
            "        access_key_id: ${ZONE_A_KEY}\n"
            "        secret_access_key: ${ZONE_A_SECRET}\n"
            "        session_token: tok-${ZONE_A_KEY}-$$x\n",
        ).replace("bucket: des-zone-b", "bucket: ${BUCKET_B}")
    )
    env = {"ZONE_A_KEY": "AKIAEXAMPLE", "ZONE_A_SECRET": "s3cr3t", "BUCKET_B": "bucket-b"}
    zones = load_zones(path, env=env)
    creds = zones.zones[0].s3.credentials
    assert creds == S3Credentials("AKIAEXAMPLE", "s3cr3t", "tok-AKIAEXAMPLE-$x", None)
    assert zones.zones[1].s3.bucket == "bucket-b"
    assert zones.zones[1].s3.credentials is None
    assert "s3cr3t" not in repr(zones)
    assert "tok-" not in repr(zones)
    assert "AKIAEXAMPLE" in repr(zones)


def test_profile_name_alone(zones_obj: dict[str, Any]) -> None:
    zones_obj["zones"][0]["s3"]["credentials"] = {"profile_name": "archive"}
    assert parse_zones(zones_obj).zones[0].s3.credentials == S3Credentials(profile_name="archive")


def test_expansion_uses_os_environ_by_default(
    zones_obj: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DES_TEST_ZONE_BUCKET", "from-environ")
    zones_obj["zones"][0]["s3"]["bucket"] = "${DES_TEST_ZONE_BUCKET}"
    assert parse_zones(zones_obj).zones[0].s3.bucket == "from-environ"


def test_missing_and_malformed_variables(zones_obj: dict[str, Any]) -> None:
    zones_obj["zones"][1]["s3"]["credentials"] = {
        "access_key_id": "${KEY}",
        "secret_access_key": "${SECRET}",
    }
    with pytest.raises(ZoneConfigError) as info:
        parse_zones(zones_obj, env={"KEY": "k"})
    assert str(info.value) == (
        "zone 'zone-b': s3.credentials.secret_access_key: environment variable SECRET is not "
        "set (referenced as ${SECRET})"
    )
    with pytest.raises(ZoneConfigError) as info:
        expand_env("x${1BAD}", {}, where="here")
    assert str(info.value) == (
        "here: malformed variable reference '${1BAD}'; write ${NAME} with a letter or '_' "
        "first, or $$ for a literal '$'"
    )
    with pytest.raises(ZoneConfigError, match="malformed variable reference '\\$\\{OPEN'"):
        expand_env("${OPEN", {}, where="here")
    assert expand_env("a$b $$ ${X}${X}", {"X": "1"}, where="w") == "a$b $ 11"


# --- property: bisect agrees with a linear scan -----------------------------------------------


@st.composite
def partitions(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]]]:
    n_bits = draw(st.integers(4, 16))
    top = (1 << n_bits) - 1
    cuts = sorted(draw(st.sets(st.integers(1, top), max_size=20)))
    bounds = [0, *cuts, top + 1]
    ranges = [(a, b - 1) for a, b in itertools.pairwise(bounds)]
    keep = draw(st.lists(st.booleans(), min_size=len(ranges), max_size=len(ranges)))
    chosen = [r for r, k in zip(ranges, keep, strict=True) if k] or ranges[:1]
    return n_bits, chosen


@given(part=partitions(), probes=st.lists(st.integers(0, 0xFFFF), max_size=30))
def test_zone_for_matches_linear_scan(
    part: tuple[int, list[tuple[int, int]]], probes: list[int]
) -> None:
    n_bits, ranges = part
    obj = {
        "n_bits": n_bits,
        "allow_gaps": True,
        "zones": [
            {"name": f"z{a}", "range": {"start": a, "end": b}, "s3": {"bucket": "b"}}
            for a, b in reversed(ranges)
        ],
    }
    zones = parse_zones(obj)
    for probe in [p & ((1 << n_bits) - 1) for p in probes] + [a for a, _ in ranges]:
        owners = [f"z{a}" for a, b in ranges if a <= probe <= b]
        if owners:
            assert zones.zone_for(probe).name == owners[0]
        else:
            with pytest.raises(ZoneNotFound):
                zones.zone_for(probe)


@settings(max_examples=40, deadline=None)
@given(part=partitions())
def test_json_and_yaml_files_load_the_same_map(part: tuple[int, list[tuple[int, int]]]) -> None:
    yaml = pytest.importorskip("yaml", reason="YAML zones files need PyYAML: des-routing[yaml]")
    n_bits, ranges = part
    obj = {
        "n_bits": n_bits,
        "allow_gaps": True,
        "zones": [
            {
                "name": f"zone {a}: ü",
                "range": {"start": a, "end": b},
                "s3": {"bucket": f"b-{a}", "prefix": f"p{b}/", "region_name": "eu-west-1"},
            }
            for a, b in ranges
        ],
    }
    expected = parse_zones(obj)
    with tempfile.TemporaryDirectory() as tmp:
        as_json = Path(tmp) / "zones.json"
        as_json.write_text(json.dumps(obj), encoding="utf-8")
        as_yaml = Path(tmp) / "zones.yml"
        as_yaml.write_text(yaml.safe_dump(obj, allow_unicode=True), encoding="utf-8")
        assert load_zones(as_json) == expected
        assert load_zones(as_yaml) == expected
    assert [(z.start, z.end) for z in expected.zones] == sorted(ranges)
