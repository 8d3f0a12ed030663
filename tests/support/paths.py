"""Where the tests find the repository's files (each test sits in its feature's
directory, one level below ``tests/``)."""
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = TESTS_DIR.parent
