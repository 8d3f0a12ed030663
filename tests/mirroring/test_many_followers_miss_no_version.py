"""A small, bounded version of bench/load_followers.py: many long-polling
followers, a publisher publishing; nobody misses or skips verification of a
version. (Figures are measured only by the bench script.)"""
from __future__ import annotations

import importlib.util

import pytest

from support.paths import REPO_ROOT

_spec = importlib.util.spec_from_file_location(
    "load_followers", REPO_ROOT / "bench" / "load_followers.py")
load_followers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load_followers)


@pytest.mark.slow
@pytest.mark.timeout(90)
async def test_many_long_polling_followers_miss_no_version(tmp_path):
    r = await load_followers.run_load(tmp_path, followers=40, versions=4, period=0.1, batch=10, bound=60)
    assert r["problems"] == []
    assert r["samples"] == 40 * 4  # every follower reached every version
