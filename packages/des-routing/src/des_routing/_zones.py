"""Zone maps: which S3 location serves which range of shard indexes.

A zones config (JSON, or YAML with the ``yaml`` extra) looks like::

    n_bits: 8
    zones:
      - name: zone-a
        range: { start: 0, end: 127 }
        s3:
          bucket: des-zone-a
          region_name: us-east-1
          endpoint_url: https://s3.example.com
          prefix: des-a/
          credentials:                      # optional
            access_key_id: ${ZONE_A_KEY_ID}  # ${VAR} is read from the environment
            secret_access_key: ${ZONE_A_SECRET}
      - name: zone-b
        range: { start: 128, end: 255 }
        s3: { bucket: des-zone-b }

Ranges are inclusive, must not overlap, must lie within ``[0, 2**n_bits - 1]`` and must cover
every shard index unless the config says ``allow_gaps: true``.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from des_routing._errors import InvalidShardKey, ZoneConfigError, ZoneNotFound
from des_routing._routing import parse_object_key, validate_n_bits

__all__ = [
    "S3Credentials",
    "Zone",
    "ZoneMap",
    "ZoneS3",
    "expand_env",
    "load_zones",
    "parse_zones",
]


@dataclass(frozen=True, slots=True)
class S3Credentials:
    """Explicit credentials of a zone (secrets are kept out of ``repr``)."""

    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    profile_name: str | None = None


@dataclass(frozen=True, slots=True)
class ZoneS3:
    """The S3 location of a zone. ``credentials=None`` means boto3's default chain."""

    bucket: str
    region_name: str | None = None
    endpoint_url: str | None = None
    prefix: str = ""
    credentials: S3Credentials | None = None


@dataclass(frozen=True, slots=True)
class Zone:
    """A named, inclusive range ``start..end`` of shard indexes and where it is stored."""

    name: str
    start: int
    end: int
    s3: ZoneS3

    def __contains__(self, shard_index: object) -> bool:
        return isinstance(shard_index, int) and self.start <= shard_index <= self.end


@dataclass(frozen=True, slots=True)
class ZoneMap:
    """Validated zones, sorted by ``start``; ``zone_for`` finds a zone by binary search."""

    n_bits: int
    zones: tuple[Zone, ...]
    allow_gaps: bool = False
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            validate_n_bits(self.n_bits)
        except ValueError as exc:
            raise ZoneConfigError(f"zones config: {exc}") from None
        ordered = tuple(sorted(self.zones, key=lambda z: (z.start, z.end)))
        _check_zones(ordered, self.n_bits, self.allow_gaps)
        object.__setattr__(self, "zones", ordered)
        object.__setattr__(self, "_starts", tuple(z.start for z in ordered))

    @property
    def max_index(self) -> int:
        return (1 << self.n_bits) - 1

    def zone_for(self, shard_index: int) -> Zone:
        """The zone serving ``shard_index`` (raises :class:`ZoneNotFound`)."""
        if isinstance(shard_index, bool) or not isinstance(shard_index, int):
            raise ZoneNotFound(f"shard index must be an int, got {type(shard_index).__name__}")
        if not 0 <= shard_index <= self.max_index:
            raise ZoneNotFound(
                f"shard index {shard_index} is outside 0..{self.max_index} (n_bits={self.n_bits})"
            )
        pos = bisect.bisect_right(self._starts, shard_index) - 1
        if pos >= 0:
            zone = self.zones[pos]
            if shard_index <= zone.end:
                return zone
        raise ZoneNotFound(
            f"no zone serves shard index {shard_index} (0x{shard_index:X}): the zones config "
            "leaves it uncovered (allow_gaps: true)"
        )

    def zone_for_key(self, key: str) -> Zone:
        """The zone of a shard key or continuation part key (``YYYYMMDD/A7[.pN].des``)."""
        parsed = parse_object_key(key)
        if parsed.shard_index is None:
            raise InvalidShardKey(
                f"{key!r} is a big-file key: it names no shard index, so no zone can be derived "
                "from it; use the zone of the shard that refers to it"
            )
        return self.zone_for(parsed.shard_index)

    def zone_named(self, name: str) -> Zone:
        for zone in self.zones:
            if zone.name == name:
                return zone
        raise ZoneNotFound(f"no zone named {name!r}; zones: {[z.name for z in self.zones]}")


def _check_zones(zones: tuple[Zone, ...], n_bits: int, allow_gaps: bool) -> None:
    max_index = (1 << n_bits) - 1
    if not zones:
        raise ZoneConfigError("zones config: 'zones' must list at least one zone")
    seen: set[str] = set()
    for zone in zones:
        if zone.name in seen:
            raise ZoneConfigError(f"zone {zone.name!r}: the name is used by more than one zone")
        seen.add(zone.name)
        if zone.start > zone.end:
            raise ZoneConfigError(
                f"zone {zone.name!r}: range start {zone.start} is greater than end {zone.end}"
            )
        if zone.start < 0 or zone.end > max_index:
            raise ZoneConfigError(
                f"zone {zone.name!r}: range {zone.start}..{zone.end} is outside "
                f"[0, {max_index}] (n_bits={n_bits})"
            )
    for prev, cur in itertools.pairwise(zones):
        if cur.start <= prev.end:
            raise ZoneConfigError(
                f"zones {prev.name!r} ({prev.start}..{prev.end}) and {cur.name!r} "
                f"({cur.start}..{cur.end}) overlap on shard indexes "
                f"{cur.start}..{min(prev.end, cur.end)}"
            )
    if allow_gaps:
        return
    gaps: list[str] = []
    expected = 0
    for zone in zones:
        if zone.start > expected:
            gaps.append(f"{expected}..{zone.start - 1} (before zone {zone.name!r})")
        expected = zone.end + 1
    if expected <= max_index:
        gaps.append(f"{expected}..{max_index} (after zone {zones[-1].name!r})")
    if gaps:
        raise ZoneConfigError(
            f"zones leave shard indexes uncovered: {', '.join(gaps)}; cover [0, {max_index}] "
            "or set 'allow_gaps: true'"
        )


_ENV_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{[^}]*\}?")


def expand_env(text: str, env: Mapping[str, str], *, where: str) -> str:
    """Replace ``${VAR}`` with ``env["VAR"]`` (``$$`` is a literal ``$``)."""

    def repl(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "$$":
            return "$"
        name = match.group(1)
        if name is None:
            raise ZoneConfigError(
                f"{where}: malformed variable reference {text!r}; write ${{NAME}} with a "
                "letter or '_' first, or $$ for a literal '$'"
            )
        try:
            return env[name]
        except KeyError:
            raise ZoneConfigError(
                f"{where}: environment variable {name} is not set (referenced as ${{{name}}})"
            ) from None

    return _ENV_RE.sub(repl, text)


_TOP_KEYS = {"n_bits", "zones", "allow_gaps"}
_ZONE_KEYS = {"name", "range", "s3"}
_RANGE_KEYS = {"start", "end"}
_S3_KEYS = {"bucket", "region_name", "endpoint_url", "prefix", "credentials"}
_CRED_KEYS = {"access_key_id", "secret_access_key", "session_token", "profile_name"}


def _type_name(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ZoneConfigError(f"{where} must be a mapping, got {_type_name(value)}")
    return value


def _check_keys(obj: Mapping[str, Any], allowed: set[str], required: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in obj if k not in allowed)
    if unknown:
        raise ZoneConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(k for k in required if k not in obj)
    if missing:
        raise ZoneConfigError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ZoneConfigError(f"{where} must be an integer, got {_type_name(value)} {value!r}")
    return value


def _opt_str(value: object, where: str, env: Mapping[str, str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ZoneConfigError(f"{where} must be a string, got {_type_name(value)} {value!r}")
    return expand_env(value, env, where=where)


def _parse_zone(raw: object, pos: int, env: Mapping[str, str]) -> Zone:
    obj = _mapping(raw, f"zones[{pos}]")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ZoneConfigError(
            f"zones[{pos}]: 'name' must be a non-empty string, got {_type_name(name)} {name!r}"
        )
    label = f"zone {name!r}"
    _check_keys(obj, _ZONE_KEYS, _ZONE_KEYS, label)
    rng = _mapping(obj["range"], f"{label}: 'range'")
    _check_keys(rng, _RANGE_KEYS, _RANGE_KEYS, f"{label}: range")
    start = _int(rng["start"], f"{label}: range.start")
    end = _int(rng["end"], f"{label}: range.end")
    s3 = _mapping(obj["s3"], f"{label}: 's3'")
    _check_keys(s3, _S3_KEYS, {"bucket"}, f"{label}: s3")
    bucket = _opt_str(s3["bucket"], f"{label}: s3.bucket", env)
    if not bucket:
        raise ZoneConfigError(f"{label}: s3.bucket must be a non-empty string")
    prefix = _opt_str(s3.get("prefix"), f"{label}: s3.prefix", env) or ""
    if prefix.startswith("/"):
        raise ZoneConfigError(f"{label}: s3.prefix {prefix!r} must not start with '/'")
    credentials: S3Credentials | None = None
    raw_creds = s3.get("credentials")
    if raw_creds is not None:
        creds = _mapping(raw_creds, f"{label}: s3.credentials")
        _check_keys(creds, _CRED_KEYS, set(), f"{label}: s3.credentials")
        values = {
            k: _opt_str(creds.get(k), f"{label}: s3.credentials.{k}", env) for k in _CRED_KEYS
        }
        if (values["access_key_id"] is None) != (values["secret_access_key"] is None):
            raise ZoneConfigError(
                f"{label}: s3.credentials needs both access_key_id and secret_access_key "
                "(or neither, with profile_name or the default credential chain)"
            )
        if values["session_token"] is not None and values["access_key_id"] is None:
            raise ZoneConfigError(
                f"{label}: s3.credentials.session_token needs access_key_id and secret_access_key"
            )
        credentials = S3Credentials(**values)
    return Zone(
        name=name,
        start=start,
        end=end,
        s3=ZoneS3(
            bucket=bucket,
            region_name=_opt_str(s3.get("region_name"), f"{label}: s3.region_name", env) or None,
            endpoint_url=_opt_str(s3.get("endpoint_url"), f"{label}: s3.endpoint_url", env) or None,
            prefix=prefix,
            credentials=credentials,
        ),
    )


def parse_zones(
    obj: object, *, n_bits: int | None = None, env: Mapping[str, str] | None = None
) -> ZoneMap:
    """Validate a decoded zones config (the mapping a JSON or YAML file holds).

    ``n_bits`` is the routing width the caller uses: the config's own ``n_bits`` must equal
    it when both are given; a config without ``n_bits`` takes it (default 8). ``env`` is used
    for ``${VAR}`` expansion (default: ``os.environ``).
    """
    top = _mapping(obj, "zones config")
    _check_keys(top, _TOP_KEYS, {"zones"}, "zones config")
    env = os.environ if env is None else env
    bits: int
    if "n_bits" in top:
        bits = _int(top["n_bits"], "zones config: 'n_bits'")
        if n_bits is not None and n_bits != bits:
            raise ZoneConfigError(
                f"zones config: n_bits is {bits} but the shards are routed with n_bits={n_bits}; "
                "the two must match"
            )
    else:
        bits = 8 if n_bits is None else n_bits
    allow_gaps = top.get("allow_gaps", False)
    if not isinstance(allow_gaps, bool):
        raise ZoneConfigError(
            f"zones config: 'allow_gaps' must be true or false, got {_type_name(allow_gaps)} "
            f"{allow_gaps!r}"
        )
    raw_zones = top["zones"]
    if not isinstance(raw_zones, list):
        raise ZoneConfigError(
            f"zones config: 'zones' must be a list of zones, got {_type_name(raw_zones)}"
        )
    zones = tuple(_parse_zone(raw, pos, env) for pos, raw in enumerate(raw_zones))
    return ZoneMap(n_bits=bits, zones=zones, allow_gaps=allow_gaps)


def _decode(text: str, path: Path) -> object:
    suffix = path.suffix.lower()
    looks_json = text.lstrip().startswith(("{", "["))
    if suffix == ".json" or (suffix not in {".yaml", ".yml"} and looks_json):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ZoneConfigError(
                f"zones file {str(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno}"
            ) from None
    try:
        import yaml
    except ImportError:
        raise ZoneConfigError(
            f"zones file {str(path)!r} is YAML but PyYAML is not installed: "
            "pip install 'des-routing[yaml]' (or write the zones file as JSON)"
        ) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ZoneConfigError(
            f"zones file {str(path)!r} is not valid YAML: {problem}{where}"
        ) from None


def load_zones(
    path: str | os.PathLike[str],
    *,
    n_bits: int | None = None,
    env: Mapping[str, str] | None = None,
) -> ZoneMap:
    """Read and validate a zones file: ``.json`` is JSON, ``.yaml``/``.yml`` is YAML, any other
    name is JSON when it starts with ``{`` and YAML otherwise."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ZoneConfigError(f"zones file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ZoneConfigError(f"cannot read zones file {str(p)!r}: {exc}") from None
    if not text.strip():
        raise ZoneConfigError(f"zones file {str(p)!r} is empty")
    obj = _decode(text, p)
    try:
        return parse_zones(obj, n_bits=n_bits, env=env)
    except ZoneConfigError as exc:
        raise ZoneConfigError(f"zones file {str(p)!r}: {exc}") from None
