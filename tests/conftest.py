"""Shared pytest fixtures. Fixtures that start real servers live in their own plugin modules."""

pytest_plugins = [
    "tests.fixtures_es",
    "tests.fixtures_pg",
]
