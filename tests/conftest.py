import pytest
from hypothesis import HealthCheck, settings

from tests.containers import ModeError, fixture_mode

settings.register_profile("ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=60, deadline=None)
settings.load_profile("ci")


def pytest_configure(config: pytest.Config) -> None:
    # Containers or processes for the integration fixtures (tests/containers.py), decided once, up front:
    # TRIGREASON_TEST_CONTAINERS=1 with no engine, or a bad value, stops the run before any test.
    try:
        fixture_mode()
    except ModeError as exc:
        raise pytest.UsageError(str(exc)) from exc


def pytest_report_header(config: pytest.Config) -> str:
    return fixture_mode().header


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Also under -q, which hides the header.
    if terminalreporter.verbosity < 0:
        terminalreporter.write_line(fixture_mode().header)
