"""``python -m services.api``: run the API with settings from the environment."""

from __future__ import annotations

import sys

from services.api.server import run
from services.config import Settings
from services.core.errors import NewsdeskError


def main() -> int:
    try:
        run(Settings.from_env())
    except NewsdeskError as exc:
        print(f"newsdesk api: error [{exc.code}]: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
