"""The HTTP face of sessdb: the aiohttp application, its handlers and its one error mapping."""
