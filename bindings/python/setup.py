"""Builds mlorc._mlorc, the CPython extension over include/mlorc.h, and the
library under it.

The package lives inside the libmlorc repository (../.. from here). build_ext
first runs `swift build -c release --product mlorc` at the repository root
(incremental: a no-op when the library is up to date), or takes a library
already built from $MLORC_LIBRARY_DIR. It then compiles the extension against
that libmlorc.so and ships the library inside the package under its SONAME
(libmlorc.so.MAJOR), found at run time through an rpath of $ORIGIN: the
installed package does not depend on the build tree or on LD_LIBRARY_PATH.
For a self-contained wheel, also vendor OpenBLAS and LAPACKE with auditwheel
(see README.md).
"""
import os
import re
import shutil
import subprocess

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
LIBRARY = "libmlorc.so"
HEADER = os.path.join(REPO, "include", "mlorc.h")


def header_version():
    """(MAJOR, MINOR, PATCH) from mlorc.h: package, SONAME and library agree."""
    try:
        with open(HEADER, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        raise SystemExit(f"{HEADER} not found: build the package from inside the libmlorc repository "
                         "(pip install ./bindings/python at its root), not from a copy of bindings/python")
    parts = [re.search(rf"^#define MLORC_VERSION_{k}\s+(\d+)", text, re.M) for k in ("MAJOR", "MINOR", "PATCH")]
    if not all(parts):
        raise SystemExit(f"{HEADER} lacks one of the MLORC_VERSION_MAJOR/MINOR/PATCH macros")
    return tuple(int(m.group(1)) for m in parts)


def built_library_dir():
    """The folder holding libmlorc.so: $MLORC_LIBRARY_DIR, or the release build
    of the repository, brought up to date here."""
    given = os.environ.get("MLORC_LIBRARY_DIR")
    if given:
        path = given
    else:
        if not shutil.which("swift"):
            raise SystemExit("building mlorc needs the Swift toolchain (swift on PATH) to build libmlorc.so, "
                             "or MLORC_LIBRARY_DIR set to a folder holding an already built libmlorc.so")
        subprocess.run(["swift", "build", "-c", "release", "--product", "mlorc"], cwd=REPO, check=True)
        path = os.path.join(REPO, ".build", "release")
    if not os.path.isfile(os.path.join(path, LIBRARY)):
        raise SystemExit(f"{LIBRARY} not found in {path}")
    return path


# Wheels hold no symbolic links: the development name libmlorc.so is a GNU ld
# script pointing at the real file (as glibc's libc.so is), so C code can still
# link against the package's copy with -L<package> -lmlorc.
LINKER_SCRIPT = "/* GNU ld script: link with the library under its SONAME */\nINPUT({soname})\n"


class BuildWithLibrary(build_ext):
    """Builds the library, links the extension to it, ships it in the package."""

    def run(self):
        library_dir = built_library_dir()
        for ext in self.extensions:
            ext.include_dirs.append(os.path.dirname(HEADER))
            ext.library_dirs.append(library_dir)
            ext.depends.append(HEADER)
        super().run()
        soname = f"{LIBRARY}.{header_version()[0]}"
        for ext in self.extensions:
            target = os.path.dirname(self.get_ext_fullpath(ext.name))
            os.makedirs(target, exist_ok=True)
            shutil.copyfile(os.path.join(library_dir, LIBRARY), os.path.join(target, soname))
            with open(os.path.join(target, LIBRARY), "w", encoding="utf-8") as f:
                f.write(LINKER_SCRIPT.format(soname=soname))


SOURCES = ["module.c", "handle.c", "step.c", "sharded.c", "split.c", "buffers.c", "errors.c"]

extension = Extension(
    "mlorc._mlorc",
    sources=[os.path.join("src", "mlorc", "_ext", s) for s in SOURCES],
    depends=[os.path.join("src", "mlorc", "_ext", "ext.h")],
    libraries=["mlorc"],
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
    # $ORIGIN: the folder of _mlorc*.so, where the copy of libmlorc.so.MAJOR lies.
    extra_link_args=["-Wl,-rpath,$ORIGIN"],
)

setup(
    version=".".join(map(str, header_version())),
    package_dir={"": "src"},
    packages=["mlorc", "mlorc.torch"],
    # The C sources in src/mlorc/_ext are compiled in, not shipped: no package
    # data is collected (which is also what setuptools warned about).
    include_package_data=False,
    ext_modules=[extension],
    cmdclass={"build_ext": BuildWithLibrary},
)
