"""The accounts' limits (_utils/webarch_limits.py): pillar, drop-ins, pam_limits."""

from __future__ import annotations

import webarch_limits
from unit.model_helpers import host, problems

G = 1 << 30
M = 1 << 20


def build(model, data: dict) -> dict:
    return model.build_model(data, host(model), 12)


def test_defaults_server_values_and_an_accounts_override(model):
    data = {
        "limits": {"tasks_max": 200, "nice": 3},
        "accounts": {"alice": {}, "bob": {"limits": {"memory_max": "2G", "cpu_quota": 0}}},
    }
    built = build(model, data)
    alice, bob = built["accounts"]["alice"]["limits"], built["accounts"]["bob"]["limits"]
    assert alice == {
        "cpu_quota": 100,
        "cpu_weight": 100,
        "memory_high": 768 * M,
        "memory_max": G,
        "tasks_max": 200,
        "io_weight": 100,
        "process_memory": G,
        "nice": 3,
    }
    assert bob == {**alice, "memory_max": 2 * G, "cpu_quota": 0}
    units = built["accounts"]["bob"]["limits_units"]
    assert units["slice"] == {
        "CPUQuota": "",
        "CPUWeight": "100",
        "MemoryHigh": str(768 * M),
        "MemoryMax": str(2 * G),
        "TasksMax": "200",
        "IOWeight": "100",
    }
    assert units["service"] == {
        "LimitNPROC": "200",
        "LimitDATA": str(G),
        "OOMScoreAdjust": "500",
    }


def test_pam_limits_hold_every_present_account(model):
    data = {"accounts": {"alice": {"limits": {"process_memory": 0}}, "bob": {"state": "absent"}}}
    pam = build(model, data)["pam_limits"]
    assert pam["path"] == "/etc/security/limits.d/60-webarch.conf"
    lines = pam["contents"].splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == [
        "alice hard nproc 128",
        "alice soft nproc 128",
        "alice hard data unlimited",
        "alice soft data unlimited",
        "alice - priority 5",
    ]


def test_cron_jobs_get_the_accounts_limits_and_niceness(model):
    data = {"accounts": {"alice": {"limits": {"nice": 9, "tasks_max": 50}}}}
    cron = build(model, data)["cron"]["data"]["accounts"]["alice"]
    assert cron["properties"] == {
        "LimitNPROC": "50",
        "LimitDATA": str(G),
        "OOMScoreAdjust": "500",
        "Nice": "9",
    }


def test_process_memory_makes_room_for_php_unless_the_account_set_it(model):
    raised = build(model, {"accounts": {"alice": {"php": {"memory_limit": "2G"}}}})
    assert raised["accounts"]["alice"]["limits"]["process_memory"] == 2 * G + 256 * M
    found = problems(
        model,
        {
            "accounts": {
                "alice": {"php": {"memory_limit": "2G"}, "limits": {"process_memory": "1G"}}
            }
        },
    )
    assert found == [
        "webarch:accounts:alice:limits:process_memory: must be at least "
        "php:memory_limit (2G) + 256M, not 1G"
    ]


def test_mistakes_are_named_by_path_all_at_once(model):
    data = {
        "limits": {"cpu_quota": -1, "memory_max": "lots", "colour": "red"},
        "accounts": {
            "alice": {
                "php": {"max_children": 20},
                "limits": {"tasks_max": 16, "nice": 20, "memory_high": "2G", "memory_max": "1G"},
            },
            "bob": {"limits": "none"},
        },
    }
    found = problems(model, data)
    assert "webarch:limits:cpu_quota: must be between 0 and 10000, not -1" in found
    assert "webarch:limits:memory_max: must be a size like 64M or 1G, not 'lots'" in found
    assert any(p.startswith("webarch:limits:colour: unknown key") for p in found)
    assert "webarch:accounts:alice:limits:nice: must be between 0 and 19, not 20" in found
    assert (
        "webarch:accounts:alice:limits:tasks_max: must be more than php:max_children (20), not 16"
        in found
    )
    assert (
        "webarch:accounts:alice:limits:memory_high: must not be above memory_max (1G), not 2G"
        in found
    )
    assert any(p.startswith("webarch:accounts:bob:limits:") for p in found)


def test_drop_in_text():
    text = webarch_limits.unit_text("Slice", {"TasksMax": "64", "CPUQuota": "50%"}, "x")
    assert text == "# Managed by Salt (webarch): x.\n[Slice]\nTasksMax=64\nCPUQuota=50%\n"


def test_php_masters_are_the_present_accounts_units(model):
    data = {"accounts": {"bob": {}, "alice": {}, "carol": {"state": "absent"}}}
    assert build(model, data)["php_masters"] == {
        "services": ["webarch-php@alice.service", "webarch-php@bob.service"],
        "sockets": ["webarch-php@alice.socket", "webarch-php@bob.socket"],
    }
    assert build(model, {"accounts": {}})["php_masters"] == {"services": [], "sockets": []}
