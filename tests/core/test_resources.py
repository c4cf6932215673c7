import os

import pytest

from patchunet.core.resources import cpu_share


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_workers_split_the_cpus_and_each_gets_at_least_one(count: int) -> None:
    cpus = os.sched_getaffinity(0)
    shares = [cpu_share(i, count) for i in range(count)]
    assert all(share and share <= cpus for share in shares)
    assert set().union(*shares) == cpus or count > len(cpus)
    if count <= len(cpus):
        assert sum(len(share) for share in shares) == len(cpus)  # no CPU given twice
