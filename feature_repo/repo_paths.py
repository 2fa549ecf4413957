"""Where the offline store's tables live, from tandem's settings (TANDEM_OFFLINE_DIR or $TANDEM_HOME/offline)."""

from pathlib import Path

from tandem.settings import get_settings

OFFLINE_DIR: Path = get_settings().offline_dir


def offline_table(name: str) -> str:
    """The parquet directory of one offline feature table."""
    return str(OFFLINE_DIR / name)
