"""The ASP.NET State Server on PostgreSQL: wire protocol, lock rules, store and listener.

``protocol`` and ``locks`` are pure; ``store`` runs the SQL of ``sql/stateserver.sql``;
``pool`` lends connections; ``waiters`` turns ``NOTIFY`` into wake-ups; ``server`` is the
asyncio listener that ``Engine`` starts when ``STATE_PORT`` is set.
"""
