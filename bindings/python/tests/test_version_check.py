"""The extension refuses a libmlorc.so of another version at import.

Builds the extension's C sources against a copy of mlorc.h that claims another
version, links it to the installed libmlorc.so and imports it in a fresh
interpreter: the import must fail with ImportError, not load or crash.
"""
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

import mlorc

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = os.path.join(HERE, "..", "src", "mlorc", "_ext")
HEADER = os.path.join(HERE, "..", "..", "..", "include", "mlorc.h")


def test_import_refuses_library_of_another_version(tmp_path):
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(compiler) or not os.path.isfile(HEADER):
        pytest.skip("needs a C compiler and the repository's include/mlorc.h")
    with open(HEADER, encoding="utf-8") as f:
        header = f.read()
    header = re.sub(r"#define MLORC_VERSION_MINOR\s+\d+", "#define MLORC_VERSION_MINOR 99", header)
    (tmp_path / "mlorc.h").write_text(header)
    library_dir = os.path.dirname(mlorc.__file__)  # holds the shipped libmlorc.so
    target = tmp_path / "_mlorc_other.so"
    sources = sorted(os.path.join(SOURCES, s) for s in os.listdir(SOURCES) if s.endswith(".c"))
    subprocess.run([compiler, "-shared", "-fPIC", "-std=c11", f"-I{tmp_path}",
                    f"-I{sysconfig.get_paths()['include']}", *sources, f"-L{library_dir}", "-lmlorc",
                    f"-Wl,-rpath,{library_dir}", "-o", str(target)], check=True)
    probe = (
        "import importlib.machinery as m, importlib.util as u\n"
        f"loader = m.ExtensionFileLoader('mlorc._mlorc', {str(target)!r})\n"
        "spec = u.spec_from_loader('mlorc._mlorc', loader)\n"
        "try:\n"
        "    u.module_from_spec(spec)\n"
        "except ImportError as e:\n"
        "    print('refused:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "refused:" in result.stdout
    assert "0.99." in result.stdout and mlorc.library_version in result.stdout
    assert "swift build -c release" in result.stdout
