"""`make`'s Debian packages: installed when missing as root, otherwise named in a line to run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def make_var(name: str) -> list[str]:
    """A variable of the Makefile, as make expands it."""
    done = subprocess.run(
        ["make", "-s", "--eval", "print-%: ; @echo $($*)", f"print-{name}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_package_lists_hold_what_the_llama_build_and_the_runtime_need() -> None:
    build = make_var("BUILD_PACKAGES")
    assert {"cmake", "build-essential"} <= set(build)
    runtime = make_var("RUNTIME_PACKAGES")
    assert {"libmagic1", "tesseract-ocr", "poppler-utils", "git"} <= set(runtime)
    # `make system-deps` (make run, make test) covers both; the image's runtime stage only the first.
    assert set(build) | set(runtime) <= set(make_var("SYSTEM_PACKAGES"))
    assert not set(build) & set(runtime)


def test_without_root_the_missing_packages_are_printed_not_installed() -> None:
    # A package no machine has, so the list is never empty; run as an unprivileged user.
    cmd = ["make", "-s", "system-deps", "SYSTEM_PACKAGES=kb-appliance-absent-package"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "nobody", "--", *cmd]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (
        "as root run: apt-get install -y --no-install-recommends kb-appliance-absent-package" in done.stderr
    )
