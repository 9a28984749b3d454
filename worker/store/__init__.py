"""The SQLite store: the one place where the worker's state lives, and the unit of every transaction.

`database` holds `Store` (connections, transactions, the worker's lock, backups) and `store_error` (what
SQLite's complaints about the file mean for an operator), `schema` the migrations, `changes` which
accounts a stage still owes work, `retention` what is pruned and when. Everything above imports `Store`
and the time helpers from here.
"""

from __future__ import annotations

from worker.errors import StoreLocked
from worker.store.database import Quarantined, Store, iso, lock_file, parse_iso, store_error
from worker.store.schema import MIGRATIONS

__all__ = ["MIGRATIONS", "Quarantined", "Store", "StoreLocked", "iso", "lock_file", "parse_iso", "store_error"]
