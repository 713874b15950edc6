"""Fixtures shared by the integration tests."""

from tests.integration.billing_setup import billing  # noqa: F401 - a fixture, used by name
