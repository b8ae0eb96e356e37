"""The package top: every public name imports, nothing private is listed, no import side effects."""

from __future__ import annotations

import dataclasses
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import broadcast_layer

ROOT = Path(__file__).resolve().parent.parent
#: Modules users name by path (settings, Django's admin autodiscovery, old imports).
PUBLIC_MODULES = {
    "broadcast_layer.layer": [
        "BroadcastChannelLayer",
        "get_layer",
        "HistoryPage",
        "HistoryMessage",
    ],
    "broadcast_layer.registry": ["Registry", "SyncRegistry", "get_registry", "Room", "Member"],
    "broadcast_layer.emitter": ["Emitter", "AsyncEmitter", "EmitResult"],
    "broadcast_layer.consumers": [
        "RemoteControlMixin",
        "NoPerMessageDatabaseCleanupMixin",
        "HistoryRecoveryMixin",
    ],
    "broadcast_layer.exceptions": ["RedisUnavailable", "InvalidName", "ChannelFull"],
    "broadcast_layer.acl": ["acl_rules", "acl_setuser"],
}
#: Django's own entry points: imported by Django (INSTALLED_APPS, admin.site), not from the top.
DJANGO_MODULES = {"admin", "models", "apps", "checks", "signals", "views"}


def test_every_name_in_all_imports():
    for name in broadcast_layer.__all__:
        assert getattr(broadcast_layer, name) is not None, name
    namespace: dict[str, object] = {}
    exec("from broadcast_layer import *", namespace)  # the star import users see
    assert set(broadcast_layer.__all__) <= set(namespace)


def test_all_lists_no_private_name_and_no_duplicate():
    names = broadcast_layer.__all__
    assert len(names) == len(set(names))
    dunder = {n for n in names if n.startswith("__") and n.endswith("__")}
    private = [n for n in names if n.startswith("_") and n not in dunder]
    assert private == []


def test_public_modules_keep_their_paths():
    for module, names in PUBLIC_MODULES.items():
        imported = importlib.import_module(module)
        for name in names:
            assert getattr(imported, name) is getattr(broadcast_layer, name), (module, name)


def test_importing_the_package_needs_no_settings_and_starts_nothing():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    code = (
        "import sys, threading, broadcast_layer\n"
        "from django.conf import settings\n"
        "assert not settings.configured\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "assert 'broadcast_layer.contrib.embedded' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT, timeout=60)


def test_docs_import_the_api_from_the_top_level():
    pattern = re.compile(r"from broadcast_layer\.([\w.]+) import")
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for module in pattern.findall(path.read_text()):
            if module.split(".")[0] not in DJANGO_MODULES | {"contrib"}:
                found.append(f"{path.name}: broadcast_layer.{module}")
    assert found == []


def test_the_operations_doc_lists_every_field_of_stats():
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text.split("## Counters without Prometheus", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)
    fields = [field.name for field in dataclasses.fields(broadcast_layer.NodeStats)]
    assert sorted(documented) == sorted(fields)
