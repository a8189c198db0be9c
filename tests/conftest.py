import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_collection_modifyitems(session, config, items):
    """Slow tests (the >2 GB model) first: before other tests have imported torch and grown
    the process, so the suite's peak memory is the big model's and not the sum."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)
