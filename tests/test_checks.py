"""System checks: invalid CONFIG, missing hosts, unreachable Redis (deploy, when asked)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.core.checks import run_checks

from broadcast_layer import checks

BACKEND = "broadcast_layer.layer.BroadcastChannelLayer"
ROOT = Path(__file__).resolve().parent.parent


def _ids(settings, config, *, deploy=False):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": BACKEND, "CONFIG": config}}
    return [message.id for message in run_checks(include_deployment_checks=deploy)
            if message.id.startswith("broadcast_layer.")]  # fmt: skip


def test_a_valid_config_passes(settings, redis_url):
    assert _ids(settings, {"hosts": [redis_url]}, deploy=True) == []


def test_an_unknown_or_invalid_key_is_e001(settings, redis_url):
    assert _ids(settings, {"hosts": [redis_url], "hots": 1}) == ["broadcast_layer.E001"]
    assert _ids(settings, {"hosts": [redis_url], "expiry": -1}) == ["broadcast_layer.E001"]


def test_missing_hosts_is_w001(settings):
    assert _ids(settings, {}) == ["broadcast_layer.W001"]


DEAD = "redis://127.0.0.1:1/0"


def test_deploy_checks_do_not_contact_redis_unless_asked(settings):
    assert _ids(settings, {"hosts": [DEAD]}, deploy=True) == []


def test_an_unreachable_redis_is_w002_when_asked_with_deploy(settings, redis_url):
    settings.BROADCAST_LAYER_CHECK_REDIS = True
    assert _ids(settings, {"hosts": [DEAD]}) == []
    assert _ids(settings, {"hosts": [DEAD]}, deploy=True) == ["broadcast_layer.W002"]
    assert _ids(settings, {"hosts": [redis_url]}, deploy=True) == []


def test_a_cluster_is_checked_when_asked(settings, redis_cluster):
    """With cluster, W002 asks the startup nodes for the masters (and their versions)."""
    settings.BROADCAST_LAYER_CHECK_REDIS = True
    config = {"hosts": [redis_cluster.url], "cluster": True}
    assert _ids(settings, config) == []
    assert _ids(settings, config, deploy=True) == []
    assert _ids(settings, {**config, "hosts": [DEAD]}, deploy=True) == ["broadcast_layer.W002"]


def test_a_master_older_than_redis_7_is_named():
    versions = {"10.0.0.1:6379": "7.2.4", "10.0.0.2:6379": "6.2.14", "10.0.0.3:6379": "10.0.1"}
    assert checks.too_old(versions) == ["10.0.0.2:6379 (6.2.14)"]


@pytest.mark.parametrize("asked", [False, True])
def test_check_deploy_passes_on_a_machine_without_redis(asked):
    """A build runs `manage.py check --deploy` where no Redis listens: exit status 0."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "REDIS_URL": DEAD}
    code = "from tests.settings import *\nBROADCAST_LAYER_CHECK_REDIS = True\n"
    with tempfile.TemporaryDirectory() as folder:
        if asked:
            (Path(folder) / "asked_settings.py").write_text(code)
            env["DJANGO_SETTINGS_MODULE"] = "asked_settings"
            env["PYTHONPATH"] = os.pathsep.join([folder, str(ROOT)])
        result = subprocess.run(
            [sys.executable, "manage.py", "check", "--deploy"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert ("broadcast_layer.W002" in result.stderr) is asked, result.stderr
    assert "broadcast_layer.E" not in result.stderr


def test_every_check_id_is_documented():
    source = Path(checks.__file__).read_text()
    ids = re.findall(r'id="(broadcast_layer\.[EW]\d{3})"', source)
    docs = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    for check_id in set(ids):
        assert check_id in docs, f"{check_id} is not documented"
    assert sorted(set(ids)) == [
        "broadcast_layer.E001",
        "broadcast_layer.E003",
        "broadcast_layer.W001",
        "broadcast_layer.W002",
        "broadcast_layer.W003",
    ]
    documented = re.findall(r"^\| `(broadcast_layer\.[EW]\d{3})` \|", docs, flags=re.M)
    assert len(documented) == len(set(documented)), "a check ID is listed twice"
    assert sorted(documented) == sorted(set(ids)), "the table and the checks differ"


URL = "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("host", "option"),
    [
        ({"address": URL, "socket_timout": 1}, "socket_timout"),
        ({"address": URL, "socket_timeout": "x"}, "socket_timeout"),
        (URL + "?health_check_intervall=3", "health_check_intervall"),
        ({"host": "127.0.0.1", "port": 6379, "ssl": True}, "ssl"),
        (
            {"sentinels": [("127.0.0.1", 26379)], "master_name": "m", "socket_keepalive": "on"},
            "socket_keepalive",
        ),
    ],
)
def test_a_bad_connection_option_is_e003_naming_it(settings, host, option):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": BACKEND, "CONFIG": {"hosts": [host]}}}
    messages = [m for m in run_checks() if m.id.startswith("broadcast_layer.")]
    assert [m.id for m in messages] == ["broadcast_layer.E003"]
    assert option in messages[0].msg
