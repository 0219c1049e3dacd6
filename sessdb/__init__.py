"""sessdb: web services and stateful HTTP sessions on PostgreSQL."""

from sessdb.config import Settings
from sessdb.errors import SessdbError

__all__ = ["Settings", "SessdbError"]
__version__ = "0.1.0"
