"""Start-up step: upgrade the configured database (``DIFFTUNE_DATABASE_URL``) to head."""

from __future__ import annotations

import sys

from core.settings import SettingsError, load_settings
from migrations import upgrade


def main() -> int:
    """Upgrade to head; exit 2 with a message naming the variable when settings are invalid."""
    try:
        settings = load_settings()
    except SettingsError as err:
        print(err, file=sys.stderr)
        return 2
    upgrade(settings.database_url)
    print("database is at head", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
