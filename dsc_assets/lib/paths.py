"""Where the project's own folders are: the one place that knows the checkout's layout."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
