"""The package's console scripts: ``tiffanyd`` and ``tiffany``, compiled
into the extension (the same programs as the Rust binaries)."""

from __future__ import annotations

import sys

from tiffany import _native


def daemon() -> None:
    """``tiffanyd``: run the job daemon."""
    sys.exit(_native.daemon_main(["tiffanyd", *sys.argv[1:]]))


def cli() -> None:
    """``tiffany``: the daemon's command-line client."""
    sys.exit(_native.cli_main(["tiffany", *sys.argv[1:]]))
