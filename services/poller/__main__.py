"""`python -m services.poller`: run the poller with settings from the environment."""

from __future__ import annotations

from services.config import Settings
from services.logs import setup_logging
from services.poller.role import run


def main() -> None:
    settings = Settings.from_env()
    setup_logging(settings.log_level, "poller")
    run(settings)


if __name__ == "__main__":
    main()
