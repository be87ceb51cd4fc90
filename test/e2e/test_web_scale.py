"""Apache's descriptors do not grow with the number of sites (the old platform ran out)."""

from __future__ import annotations

import time

import pytest
from e2e.helpers import apply, failed
from testhost import Host

pytestmark = pytest.mark.e2e


def sites_pillar(count: int) -> dict:
    """``count`` sites over accounts of five sites each."""
    accounts: dict[str, dict] = {}
    for index in range(count):
        account = accounts.setdefault(f"user{index // 5:02d}", {"sites": {}})
        account["sites"][f"site{index:02d}"] = {"server_name": f"site{index:02d}.example.org"}
    return {"webarch": {"accounts": accounts}}


def apache_descriptors(host: Host) -> dict[str, int]:
    """Open descriptors of Apache's parent and the most of any of its children, but
    sockets: a connection still closing (on a loaded machine) is not a site's."""
    # Let a request reach every child once, so lazily opened files are counted.
    for _ in range(20):
        host.run(["curl", "-sk", "-o", "/dev/null", "https://127.0.0.1/"])
    time.sleep(1)
    count = "$(for fd in /proc/$1/fd/*; do readlink $fd; done | grep -vc '^socket:')"
    script = (
        f"count() {{ echo {count}; }};"
        " parent=$(cat /var/run/apache2/apache2.pid);"
        " echo parent $(count $parent);"
        " for pid in $(pgrep -P $parent -x apache2);"
        " do echo child $(count $pid); done"
    )
    counts: dict[str, int] = {"parent": 0, "child": 0}
    for line in host.run(["sh", "-c", script], check=True).stdout.splitlines():
        kind, number = line.split()
        counts[kind] = max(counts[kind], int(number))
    return counts


def test_descriptors_stay_flat_from_2_to_50_sites(host, record_property):
    measured = {}
    for count in (2, 50):
        ret = apply(host, sites_pillar(count))
        assert failed(ret) == {}
        measured[count] = apache_descriptors(host)
        record_property(f"apache_fds_{count}_sites", measured[count])
    print(f"apache descriptors: 2 sites {measured[2]}, 50 sites {measured[50]}")
    assert measured[2]["child"] > 0
    assert measured[50] == measured[2]
