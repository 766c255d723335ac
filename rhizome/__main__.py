"""``python -m rhizome``: the same entry point as the ``rhizome`` console script."""

from __future__ import annotations

from rhizome.api.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
