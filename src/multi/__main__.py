"""``python -m multi``: the launcher."""

from multi.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
