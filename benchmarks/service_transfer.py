"""How fast the service moves a model through PostgreSQL: submit's store and an agent's fetch.

The docs say up to what size a model belongs in the database; this measures what that costs.
Each size is a file of random bytes (a model's weights barely compress), stored the way
``autotune submit`` stores a model (content-addressed, in chunks, one transaction) and fetched
the way an agent fetches it (chunk by chunk, every file checked by its sha256). The server is
a throwaway cluster on this machine (loopback: no network in the figures) unless ``--storage``
names one.

    python benchmarks/service_transfer.py --sizes-mb 16,128,512 --out results/BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import cpu_flags, footer, write_section  # noqa: E402

from autotune.service import blobs  # noqa: E402
from autotune.service.db import Database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="16,128,512")
    parser.add_argument("--storage", help="a PostgreSQL URL (default: a throwaway local server)")
    parser.add_argument("--out", type=Path, help="write the section into this BENCHMARKS.md")
    args = parser.parse_args()
    started = time.monotonic()
    server = None
    if args.storage is None:
        from tests.conftest import PgServer

        server = PgServer()
    url = args.storage or server.url  # type: ignore[union-attr]
    rows = []
    try:
        db = Database(url, retry_s=30, say=print)
        for size_mb in (int(s) for s in args.sizes_mb.split(",")):
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "weights.bin"
                with path.open("wb") as sink:
                    for _ in range(size_mb):
                        sink.write(os.urandom(2**20))
                t0 = time.perf_counter()
                [entry] = db.run(lambda c, path=path: blobs.store(c, [("weights.bin", path)]))
                stored = time.perf_counter() - t0
                t0 = time.perf_counter()
                blobs.fetch(db, [entry], Path(folder) / "fetched")
                fetched = time.perf_counter() - t0
            rows.append((size_mb, stored, fetched))
            print(f"{size_mb} MB: store {stored:.2f} s ({size_mb / stored:.0f} MB/s), "
                  f"fetch {fetched:.2f} s ({size_mb / fetched:.0f} MB/s)", flush=True)  # fmt: skip
    finally:
        if server is not None:
            server.remove()
    table = ["| model size | store (submit) | fetch + sha256 (agent) |", "|---|---|---|"]
    table += [
        f"| {mb} MB | {s:.2f} s ({mb / s:.0f} MB/s) | {f:.2f} s ({mb / f:.0f} MB/s) |"
        for mb, s, f in rows
    ]
    body = "\n".join(
        [
            "A model's files go into PostgreSQL once (content-addressed, 8 MiB chunks, one "
            "transaction with the job) and every agent fetches them once per machine. Random "
            "bytes stand for weights; the server is local, so a real network adds its own time.",
            "",
            *table,
            "",
            cpu_flags(),
            *footer(
                "python benchmarks/service_transfer.py " + shlex.join(sys.argv[1:]),
                (time.monotonic() - started) / 60,
            ),
        ]
    )
    if args.out:
        write_section(args.out, "Service: moving a model through the database", body)
    print(body)


if __name__ == "__main__":
    main()
