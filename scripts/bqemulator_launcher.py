"""Starts bqemulator (the BigQuery emulator from PyPI) on a machine without internet access.

Run with the test virtualenv's Python, with bqemulator's own command-line arguments:

    python scripts/bqemulator_launcher.py start --rest-port 9050 --grpc-port 9060 --project fluxgate-test

Why a launcher and not the `bqemulator` console script: at start the emulator runs DuckDB's
`INSTALL spatial`, which downloads the extension from the internet and, without it, exits.
fluxgate uses no GEOGRAPHY column, so the spatial extension is replaced by a no-op here before
the emulator's own CLI runs. (The avro extension fails to load the same way afterwards; the
emulator only warns about that one.) numpy must be installed beside it, or the emulator's UDF
registration fails at start: scripts/requirements-test.txt pins it.
"""

import sys

from bqemulator.storage.engine import DuckDBEngine


def _no_spatial(self) -> None:
    """GEOGRAPHY is not used by fluxgate; skip the extension download."""


DuckDBEngine._load_spatial = _no_spatial

from bqemulator.cli import main  # noqa: E402  (imported after the patch on purpose)

if __name__ == "__main__":
    sys.exit(main())
