"""A real Tango database (pytango-db) on loopback, once per test session.

Registration and the devices must be tested against a database that behaves
like the facility's, not a fake; pytango-db is one, started in a few tenths of
a second. It is started through `EmbeddedDatabase`, so the fixture exercises
the same start/stop code the `icat-servers database` command uses.

TANGO_HOST is yielded, not exported: tests that want it in their environment
set it themselves (monkeypatch.setenv or a subprocess env), so tests that need
*no* TANGO_HOST keep working.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adapters.embedded_db import EmbeddedDatabase


@pytest.fixture(scope="session")
def tango_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """TANGO_HOST ("127.0.0.1:PORT") of a fresh database, stopped by PID at the end."""
    database = EmbeddedDatabase(tmp_path_factory.mktemp("tango_db"))
    tango_host = database.start()
    running = database.status()
    assert running is not None, f"pytango-db did not answer; see {database.log_file}"
    try:
        yield tango_host
    finally:
        stopped = database.stop()
        assert stopped == running.pid, f"pytango-db (pid {running.pid}) was not running at the end"
