"""A PostgreSQL outage under load (issue 23): two bridges, 10 streamed thinking turns that end
while the database is down, the database back after 30 s. Prints one JSON object: how many
turns completed, how many waited in a spool, how long each bridge took to be ready again
once the database was back, and how many turns were stored and replayed with their reasoning.

python bench/pg_outage.py                      # 30 s, 10 streams, write_timeout 10 s
python bench/pg_outage.py --outage 60 --streams 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.outage import run_outage


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the database is down")
    parser.add_argument("--streams", type=int, default=10, help="turns open when it goes down")
    parser.add_argument(
        "--write-timeout", type=float, default=10.0, help="[store] write_timeout of the bridges"
    )
    args = parser.parse_args()
    result = asyncio.run(run_outage(args.outage, args.streams, args.write_timeout))
    print(json.dumps(result.as_dict(), indent=2))
    return 1 if result.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
