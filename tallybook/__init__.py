"""tallybook: a store for service performance data."""

from tallybook.app import create_app
from tallybook.settings import Settings

__all__ = ["Settings", "__version__", "create_app"]
__version__ = "0.1.0"
