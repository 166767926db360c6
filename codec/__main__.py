"""``python -m codec ...``: the same as the ``codec`` console script."""
from codec.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
