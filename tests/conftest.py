"""Test plugins: a real PostgreSQL (fix_db), the in-process app (fix_app), a serve subprocess (fix_server)."""

pytest_plugins = ("tests.fix_db", "tests.fix_app", "tests.fix_server")
