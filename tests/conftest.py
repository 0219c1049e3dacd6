"""Test plugins: a real PostgreSQL (fix_db), the in-process app (fix_app), a serve subprocess
(fix_server), a gate a request's statement waits at until the test opens it (fix_gate)."""

pytest_plugins = ("tests.fix_db", "tests.fix_app", "tests.fix_server", "tests.fix_gate")
