"""The package's public names."""

from __future__ import annotations

import tallybook


def test_package_exports_exist() -> None:
    assert tallybook.__all__ == ["Settings", "__version__", "create_app"]
    for name in tallybook.__all__:
        assert getattr(tallybook, name) is not None
