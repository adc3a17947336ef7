"""Builds mlorc._mlorc, the CPython extension over include/mlorc.h.

libmlorc.so must already be built (`swift build -c release` at the repository
root). It is found at ../../.build/release (or in $MLORC_LIBRARY_DIR), copied
next to the extension inside the package, and found there at run time through
an rpath of $ORIGIN, so the installed package does not depend on the build
tree or on LD_LIBRARY_PATH.
"""
import os
import re
import shutil

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
LIBRARY = "libmlorc.so"


def include_dir():
    path = os.environ.get("MLORC_INCLUDE_DIR") or os.path.join(REPO, "include")
    if not os.path.isfile(os.path.join(path, "mlorc.h")):
        raise SystemExit(f"mlorc.h not found in {path}; set MLORC_INCLUDE_DIR to the folder holding it")
    return path


def library_dir():
    path = os.environ.get("MLORC_LIBRARY_DIR") or os.path.join(REPO, ".build", "release")
    if not os.path.isfile(os.path.join(path, LIBRARY)):
        raise SystemExit(
            f"{LIBRARY} not found in {path}. Build the library first: run "
            "`swift build -c release` at the repository root, or set MLORC_LIBRARY_DIR "
            f"to the folder holding {LIBRARY}."
        )
    return path


def header_version():
    """The package version is the header's, so wheel and library agree."""
    path = os.path.join(os.environ.get("MLORC_INCLUDE_DIR") or os.path.join(REPO, "include"), "mlorc.h")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return "0.0.0"
    parts = [re.search(rf"#define MLORC_VERSION_{k}\s+(\d+)", text) for k in ("MAJOR", "MINOR", "PATCH")]
    return ".".join(m.group(1) if m else "0" for m in parts)


class BuildWithLibrary(build_ext):
    """Locates the header and library only when building, then ships the library."""

    def run(self):
        inc, lib = include_dir(), library_dir()
        for ext in self.extensions:
            ext.include_dirs.append(inc)
            ext.library_dirs.append(lib)
            ext.depends.append(os.path.join(inc, "mlorc.h"))
        super().run()
        for ext in self.extensions:
            target = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(target, exist_ok=True)
            shutil.copy2(os.path.join(lib, LIBRARY), os.path.join(target, LIBRARY))


SOURCES = ["module.c", "handle.c", "step.c", "buffers.c", "errors.c"]

extension = Extension(
    "mlorc._mlorc",
    sources=[os.path.join("src", "mlorc", "_ext", s) for s in SOURCES],
    depends=[os.path.join("src", "mlorc", "_ext", "ext.h")],
    libraries=["mlorc"],
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
    # $ORIGIN: the folder of _mlorc*.so, where the copy of libmlorc.so lies.
    extra_link_args=["-Wl,-rpath,$ORIGIN"],
)

setup(
    version=header_version(),
    package_dir={"": "src"},
    packages=["mlorc", "mlorc.torch"],
    # The C sources are compiled in, not shipped.
    exclude_package_data={"mlorc": ["_ext/*"]},
    ext_modules=[extension],
    cmdclass={"build_ext": BuildWithLibrary},
)
