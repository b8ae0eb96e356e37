"""Check the built sdist and wheel, then install the wheel in a clean venv and smoke-test it.

Usage: python .ci/check_dist.py DIST_DIR (after ``python -m build --outdir DIST_DIR``).
The clean venv gets the wheel and its dependencies from the index, nothing from this
repository: an import, ``python -m django --version``, ``django-admin check --deploy``
with a minimal settings module that uses the layer, ``django-admin broadcast --help``
and, when a ``redis-server`` is on PATH, one group message sent and received through
the installed layer. Exits non-zero with one line per problem.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DATA = [
    "broadcast_layer/py.typed",
    "broadcast_layer/migrations/0001_initial.py",
    "broadcast_layer/templates/admin/broadcast_layer/room_list.html",
    "broadcast_layer/management/commands/broadcast.py",
]
NOT_SHIPPED = ("tests/", "benchmarks/", "demo_chat/", "docs/", ".ci/", ".venv")

SETTINGS = """
SECRET_KEY = "smoke-test-only-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGH"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "channels",
                  "broadcast_layer"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True
CHANNEL_LAYERS = {"default": {"BACKEND": "broadcast_layer.layer.BroadcastChannelLayer",
                              "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}
"""

ROUND_TRIP = """import asyncio  # a round trip through the installed layer
import asyncio, sys
from broadcast_layer.contrib.embedded import EmbeddedRedis
from broadcast_layer.layer import BroadcastChannelLayer

async def main(url):
    a, b = BroadcastChannelLayer(hosts=[url]), BroadcastChannelLayer(hosts=[url])
    try:
        channel = await b.new_channel()
        await b.group_add("smoke", channel)
        await a.group_send("smoke", {"type": "smoke.test", "n": 1})
        async with asyncio.timeout(30):
            assert await b.receive(channel) == {"type": "smoke.test", "n": 1}
    finally:
        await a.close()
        await b.close()

with EmbeddedRedis() as redis:
    asyncio.run(main(redis.url))
print("round trip ok")
"""


def main(dist: Path) -> list[str]:
    version = _version()
    sdists, wheels = sorted(dist.glob("*.tar.gz")), sorted(dist.glob("*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        return [f"expected one sdist and one wheel in {dist}, found {sdists + wheels}"]
    problems = _sdist_problems(sdists[0], version) + _wheel_problems(wheels[0], version)
    return problems or _smoke(wheels[0], version)


def _version() -> str:
    namespace: dict[str, str] = {}
    exec((ROOT / "broadcast_layer" / "_version.py").read_text(), namespace)
    return namespace["__version__"]


def _sdist_problems(path: Path, version: str) -> list[str]:
    with tarfile.open(path) as archive:
        top = f"broadcast_layer-{version}/"
        names = {name.removeprefix(top) for name in archive.getnames()}
        metadata = archive.extractfile(top + "PKG-INFO")
        pkg_info = metadata.read().decode() if metadata else ""
    wanted = ["LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", *PACKAGE_DATA]
    problems = [f"sdist lacks {name}" for name in wanted if name not in names]
    problems += [f"sdist ships {n}" for n in sorted(names) if n.startswith(NOT_SHIPPED)]
    if f"\nVersion: {version}\n" not in pkg_info:
        problems.append(f"sdist metadata does not say Version: {version}")
    return problems


def _wheel_problems(path: Path, version: str) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        metadata = archive.read(f"broadcast_layer-{version}.dist-info/METADATA").decode()
    wanted = [*PACKAGE_DATA, f"broadcast_layer-{version}.dist-info/licenses/LICENSE"]
    problems = [f"wheel lacks {name}" for name in wanted if name not in names]
    problems += [f"wheel ships {n}" for n in sorted(names) if n.startswith(NOT_SHIPPED)]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in declared["dependencies"]:
        if f"Requires-Dist: {requirement}\n" not in metadata:
            problems.append(f"wheel metadata lacks Requires-Dist: {requirement}")
    if "Requires-Dist: daphne" in metadata and "extra ==" not in _line(metadata, "daphne"):
        problems.append("wheel requires daphne at run time")
    return problems


def _line(text: str, needle: str) -> str:
    return next((line for line in text.splitlines() if needle in line), "")


def _smoke(wheel: Path, version: str) -> list[str]:
    with tempfile.TemporaryDirectory() as folder:
        venv, project = Path(folder) / "venv", Path(folder) / "project"
        project.mkdir()
        (project / "smoke_settings.py").write_text(SETTINGS)
        python = venv / "bin" / "python"
        env = {"PATH": f"{venv / 'bin'}:/usr/local/bin:/usr/bin:/bin",
               "DJANGO_SETTINGS_MODULE": "smoke_settings", "PYTHONPATH": str(project)}  # fmt: skip
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "--quiet", str(wheel.resolve())],
            [str(python), "-c", "import broadcast_layer; print(broadcast_layer.__version__)"],
            [str(python), "-m", "django", "--version"],
            [str(venv / "bin" / "django-admin"), "check", "--deploy"],
            [str(venv / "bin" / "django-admin"), "broadcast", "--help"],
            [str(python), "-c", ROUND_TRIP],
        ]
        for step in steps:
            result = subprocess.run(step, cwd=project, env=env, capture_output=True, text=True,
                                    timeout=600, check=False)  # fmt: skip
            shown = " ".join(Path(step[0]).name if i == 0 else a for i, a in enumerate(step))
            shown = shown.strip().splitlines()[0]
            if result.returncode != 0:
                lines = result.stderr.strip().splitlines() or ["no output"]
                last = next((x for x in reversed(lines) if "error" in x.lower()), lines[-1])
                return [f"clean venv: `{shown[:80]}` failed: {last}"]
            if "broadcast_layer.__version__" in shown and result.stdout.strip() != version:
                return [f"installed version is {result.stdout.strip()}, expected {version}"]
            print(f"ok: {shown[:80]} {result.stdout.strip().splitlines()[-1:] or ''}")
    return []


if __name__ == "__main__":
    found = main(Path(sys.argv[1]))
    for problem in found:
        print(problem, file=sys.stderr)
    sys.exit(1 if found else 0)
