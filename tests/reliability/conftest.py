"""Fixtures for the reliability suite (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from reliability_harness import ROWS, contacts_csv, use_contacts

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
def volunteers_csv() -> str:
    """2,100 fictional volunteers: three SendGrid requests (1,000 + 1,000 + 100)."""
    return contacts_csv(ROWS)


@pytest.fixture
def audience(workdir: Path, volunteers_csv: str) -> set[str]:
    """The working folder's contacts replaced by the 2,100 volunteers; returns their addresses."""
    return use_contacts(workdir, volunteers_csv)


@pytest.fixture
def data_dir() -> Path:
    """tests/data: the corpus of bad inputs."""
    return DATA
