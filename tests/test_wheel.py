"""The wheel built from this tree ships one import namespace, ``e2ee`` (with ``e2ee.keystore``
and ``e2ee.client``), and, installed into a fresh virtual environment, runs ``e2ee demo``.

The build runs on a copy of the tree (so no ``build/`` lands in the checkout) with the
setuptools of the test environment (no network).  The fresh environment gets only the wheel;
the third-party dependencies come from the test environment's site-packages through a ``.pth``
line, which adds that directory to ``sys.path`` without running its ``.pth`` files, so our
editable install there stays invisible.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("e2ee", "keystore", "client"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    (wheel,) = out.glob("*.whl")
    return wheel


def test_the_wheel_holds_only_e2ee_and_runs_the_demo_from_a_fresh_venv(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"e2ee", "xmpp_e2ee-0.1.0.dist-info"}, top
    for needed in (
        "e2ee/keystore/store.py",
        "e2ee/client/cli.py",
        "e2ee/client/plugin.py",
        "e2ee/wire/omemo2_pb2.py",
        "e2ee/py.typed",
    ):
        assert needed in names, needed
    assert not any(n.startswith(("e2ee/tests", "e2ee/vectors")) for n in names)
    entry = zipfile.ZipFile(wheel).read("xmpp_e2ee-0.1.0.dist-info/entry_points.txt").decode()
    assert "e2ee = e2ee.client.cli:main" in entry

    env_dir = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    fresh_py = env_dir / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(fresh_py),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    fresh_site = Path(
        subprocess.run(
            [str(fresh_py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    (fresh_site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    where = subprocess.run(
        [str(fresh_py), "-c", "import e2ee.client.cli, e2ee.keystore; print(e2ee.__file__)"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert where.startswith(str(fresh_site)), where  # the wheel's copy, not this checkout
    demo = subprocess.run(
        [str(env_dir / "bin" / "e2ee"), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert demo.returncode == 0, demo.stderr
    assert "demo finished" in demo.stdout
    assert demo.stdout.count("decrypted (") == 16
