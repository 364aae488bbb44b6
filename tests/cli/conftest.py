"""Fixtures shared by the CLI and pipeline tests."""

import pytest


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory):
    """``GTCOMPRESS_CACHE`` in a folder of the module's own while its tests run: not ~/.cache, and not
    left set for the modules an xdist worker runs after it."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("cache")
        mp.setenv("GTCOMPRESS_CACHE", str(path))
        yield path
