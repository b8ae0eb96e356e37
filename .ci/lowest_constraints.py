"""Print pip constraints pinning every runtime dependency to its declared floor.

`make test-oldest` installs the package with these constraints, so the suite runs
against the lowest versions pyproject.toml claims to support. Only the runtime
requirements are pinned (`dependencies` and the extras users install, the demo's included);
the test tooling of the `dev` extra stays at its latest release. A requirement
without a `>=` floor is an error: a floor nobody tests is a floor nobody knows.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

#: The extra holding test tooling, not something the layer or its demo runs with.
TOOLING_EXTRAS = {"dev"}
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)(?:\[[^\]]*\])?\s*>=\s*(?P<floor>[^,;\s]+)")


def floors(pyproject: Path) -> dict[str, str]:
    """Map each runtime requirement's name to its declared floor."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra, items in project.get("optional-dependencies", {}).items():
        if extra not in TOOLING_EXTRAS:
            requirements.extend(items)
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"{requirement!r} has no '>=' floor to test")
        name = match["name"].lower().replace("_", "-")
        if pins.setdefault(name, match["floor"]) != match["floor"]:
            raise SystemExit(f"{name} has two floors: {pins[name]} and {match['floor']}")
    return pins


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    for name, floor in sorted(floors(root / "pyproject.toml").items()):
        sys.stdout.write(f"{name}=={floor}\n")
