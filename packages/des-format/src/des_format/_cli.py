"""The stdlib command line: ``python -m des_format ls|cat|verify|info SHARD``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ._errors import DesFormatError
from ._layout import DEFAULT_BIGFILES_PREFIX, entry_to_json
from ._reader import ShardReader

PROG = "python -m des_format"

_DESCRIPTION = """\
Inspect DES shard files (.des) on local disk: the current format and legacy DES2 shards.

  ls SHARD          one JSON object per entry (uid, sizes, codec, checksum, big-file flag,
                    metadata; block_offset for members of a solid block); tombstoned
                    entries are listed with "deleted": true
  cat SHARD UID     write the original bytes of UID to standard output (checksum verified);
                    big files are read from the _bigFiles/ folder beside the shard and
                    continuation parts (NAME.pN.des) from beside it too
  verify SHARD      check header, footer, index and every payload checksum; exits 1 with a
                    message naming the first bad entry
  info SHARD        format version, entry count, index size (one JSON object)
"""

_EPILOG = """\
exit status: 0 success, 1 the shard is unreadable, corrupt or lacks the entry, 2 bad usage.
examples:
  python -m des_format ls /data/des/20240101/A7.des
  python -m des_format cat /data/des/20240101/A7.des doc-000001 > doc.json
  python -m des_format verify /data/des/20240101/A7.des
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--bigfiles-prefix",
        default=DEFAULT_BIGFILES_PREFIX,
        help="folder beside the shard holding big files (default: %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("ls", help="list entries as JSON lines")
    p.add_argument("shard", help="path of the .des file")
    p = sub.add_parser("cat", help="write one file's original bytes to stdout")
    p.add_argument("shard", help="path of the .des file")
    p.add_argument("uid", help="uid of the file to extract")
    p = sub.add_parser("verify", help="check every checksum of a shard")
    p.add_argument("shard", help="path of the .des file")
    p.add_argument(
        "--quick", action="store_true", help="check header, footer and index only, not payloads"
    )
    p = sub.add_parser("info", help="summary of a shard as one JSON object")
    p.add_argument("shard", help="path of the .des file")
    return parser


def _error(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        with ShardReader.open_path(args.shard, bigfiles_prefix=args.bigfiles_prefix) as reader:
            if args.command == "ls":
                out = sys.stdout
                for entry in reader.iter_entries():
                    out.write(json.dumps(entry_to_json(entry), ensure_ascii=False) + "\n")
                out.flush()
            elif args.command == "cat":
                data = reader.read(args.uid)
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
            elif args.command == "verify":
                count = reader.verify(deep=not args.quick)
                if args.quick:
                    what = "index checked"
                elif reader.index.is_legacy:
                    what = "all readable (legacy DES2 stores no checksums)"
                else:
                    what = "all checksums match"
                print(f"ok: {args.shard}: {count} entries, {what}")
            else:
                idx = reader.index
                info = {
                    "path": args.shard,
                    "format": "DES2" if idx.is_legacy else "DESF",
                    "format_version": idx.format_version,
                    "entries": idx.entry_count,
                    "object_size": idx.object_size,
                    "index_offset": idx.index_offset,
                    "index_bytes": idx.index_length,
                    "buckets": idx.bucket_count,
                }
                if idx.dictionary is not None:  # only shards with a zstd dictionary
                    info["dictionary_bytes"] = len(idx.dictionary)
                print(json.dumps(info))
    except BrokenPipeError:
        return 0
    except DesFormatError as exc:
        return _error(f"{args.shard}: {exc}")
    except OSError as exc:
        return _error(f"{args.shard}: {exc.strerror or exc}")
    return 0
