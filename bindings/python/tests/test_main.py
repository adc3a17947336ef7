"""`python -m mlorc`: every line checked against an independent source (the
loader's maps of this process, ldd of the library, /proc/cpuinfo, the
package metadata, an environment variable OpenBLAS must honour)."""
import importlib.metadata
import os
import re
import subprocess
import sys

import mlorc
from mlorc import _native


def run_report(tmp_path, **env):
    result = subprocess.run([sys.executable, "-m", "mlorc"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60, check=True)
    assert result.stderr == ""
    return result.stdout


def field(report, label):
    match = re.search(rf"^{re.escape(label)}: (.*)$", report, re.M)
    assert match, f"no '{label}:' line in\n{report}"
    return match.group(1)


def loaded_files():
    with open("/proc/self/maps", encoding="utf-8") as f:
        return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}


def ldd(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    return {m.group(1): os.path.realpath(m.group(2)) for m in re.finditer(r"^\s*(\S+) => (/\S+)", out, re.M)}


def test_versions_and_library_path(tmp_path):
    report = run_report(tmp_path)
    package_dir = os.path.dirname(mlorc.__file__)
    assert report.splitlines()[0] == f"mlorc {importlib.metadata.version('mlorc')} at {package_dir}"
    assert report.splitlines()[1] == (f"libmlorc {mlorc.library_version} (the extension was compiled "
                                      f"against mlorc.h {mlorc.library_version})")
    library = field(report, "library")
    assert library in loaded_files()  # the file this process loaded for libmlorc
    assert os.path.dirname(library) == package_dir and os.path.basename(library).startswith("libmlorc.so.")


def test_blas_and_lapacke_are_those_libmlorc_links(tmp_path):
    report = run_report(tmp_path)
    linked = ldd(field(report, "library"))
    blas = field(report, "BLAS")
    assert blas == next(path for name, path in linked.items() if name.startswith("libopenblas"))
    lapacke = field(report, "LAPACKE")
    assert lapacke == next(path for name, path in linked.items() if name.startswith("liblapacke"))
    assert re.search(r"^  OpenBLAS \d+\.\d+\.\d+ ", report, re.M)


def test_kernels_line_matches_cpuinfo(tmp_path):
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = next(line for line in f if line.startswith("flags")).split(":", 1)[1].split()
    line = field(run_report(tmp_path), "kernels")
    assert line.startswith("AVX2 + FMA, compiled for x86-64 haswell")
    assert f"AVX2 {'yes' if 'avx2' in flags else 'NO'}, FMA {'yes' if 'fma' in flags else 'NO'}" in line


def test_thread_settings(tmp_path):
    report = run_report(tmp_path, OPENBLAS_NUM_THREADS="1")
    default = int(_native.get_hyper(_native.Handle(_native.RULES["adamw"]), "threads"))
    assert f"(default {default}, range 1..256;" in field(report, "threads")
    assert re.search(r"^  OpenBLAS threads: 1 \(", report, re.M)
    assert "OPENBLAS_NUM_THREADS=1" in field(report, "  environment")
