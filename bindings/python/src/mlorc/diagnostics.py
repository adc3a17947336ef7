"""What `python -m mlorc` prints: the facts a bug report needs.

The libraries are found through the loader itself: dlsym on the extension's
handle searches the extension and the libraries it brought in, in load order,
so the OpenBLAS and LAPACKE found that way are the ones libmlorc calls (not,
say, NumPy's own OpenBLAS in the same process), and dladdr names their files.
"""
import ctypes
import importlib.metadata
import os
import platform
import sys

from . import _native

# The Swift kernels are compiled with -target-cpu haswell (Package.swift):
# they execute AVX2 and FMA instructions unconditionally.
KERNEL_TARGET = "x86-64 haswell"
KERNEL_FLAGS = ("avx2", "fma")


class _DlInfo(ctypes.Structure):
    _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]


def _libc():
    libc = ctypes.CDLL(None)
    libc.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(_DlInfo)]
    libc.dladdr.restype = ctypes.c_int
    return libc


def defining_file(handle, symbol):
    """The file of the library that defines `symbol` as seen from `handle`
    (a ctypes.CDLL), or None when nothing there defines it."""
    try:
        function = getattr(handle, symbol)
    except AttributeError:
        return None
    info = _DlInfo()
    if not _libc().dladdr(ctypes.cast(function, ctypes.c_void_p), ctypes.byref(info)) or not info.dli_fname:
        return None
    return os.path.realpath(os.fsdecode(info.dli_fname))


def _extension_handle():
    # Opening the already loaded extension again returns the same object.
    return ctypes.CDLL(_native._mlorc.__file__)


def cpu_flags():
    """The flags of the first processor in /proc/cpuinfo (empty if unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def openblas_info(handle):
    """OpenBLAS's own description of itself, through the handle's lookup."""
    info = {}
    for name, restype in (("openblas_get_config", ctypes.c_char_p), ("openblas_get_corename", ctypes.c_char_p),
                          ("openblas_get_num_threads", ctypes.c_int), ("openblas_get_parallel", ctypes.c_int)):
        try:
            function = getattr(handle, name)
        except AttributeError:
            continue
        function.restype, function.argtypes = restype, []
        value = function()
        info[name[len("openblas_get_"):]] = value.decode() if isinstance(value, bytes) else value
    return info


def _distribution_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect():
    """The report as a dict (what `python -m mlorc` formats)."""
    handle = _extension_handle()
    flags = cpu_flags()
    optimizer = _native.Handle(_native.RULES["adamw"])
    threads_low, threads_high = _native._mlorc.param_bounds(_native.RULES["adamw"], _native.PARAMS["threads"])
    return {
        "package_version": _distribution_version("mlorc"),
        "package_path": os.path.dirname(os.path.abspath(_native.__file__)),
        "library_version": _native._mlorc.version_string(),
        "header_version": _native._mlorc.HEADER_VERSION,
        "library_path": defining_file(handle, "mlorc_version_string"),
        "kernel_target": KERNEL_TARGET,
        "cpu_model": cpu_model(),
        "cpu_has": {flag: flag in flags for flag in KERNEL_FLAGS},
        "blas_path": defining_file(handle, "cblas_sgemm"),
        "lapacke_path": defining_file(handle, "LAPACKE_sgesdd"),
        "lapack_path": defining_file(handle, "sgesdd_"),
        "openblas": openblas_info(handle),
        "default_threads": int(_native.get_hyper(optimizer, "threads")),
        "threads_bounds": (int(threads_low), int(threads_high)),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "environment": {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_CORETYPE",
                                                   "OPENBLAS_L2_SIZE") if k in os.environ},
        "python": f"{platform.python_implementation()} {platform.python_version()} ({sys.executable})",
        "numpy": _distribution_version("numpy"),
        "torch": _distribution_version("torch"),
    }


_PARALLEL = {0: "sequential", 1: "pthreads", 2: "OpenMP"}


def format_report(r):
    major, rest = divmod(r["header_version"], 10000)
    minor, patch = divmod(rest, 100)
    has = ", ".join(f"{flag.upper()} {'yes' if ok else 'NO'}" for flag, ok in r["cpu_has"].items())
    lines = [
        f"mlorc {r['package_version'] or '(not installed as a distribution)'} at {r['package_path']}",
        f"libmlorc {r['library_version']} (the extension was compiled against mlorc.h {major}.{minor}.{patch})",
        f"library: {r['library_path']}",
        f"kernels: AVX2 + FMA, compiled for {r['kernel_target']}; this CPU ({r['cpu_model']}): {has}",
    ]
    if not all(r["cpu_has"].values()):
        lines.append("WARNING: this CPU lacks an instruction set the kernels use: a step will stop the "
                     "process with an illegal instruction")
    blas = r["openblas"]
    lines += [
        f"BLAS: {r['blas_path']}",
        f"  {blas['config']}; core {blas.get('corename', '?')}" if "config" in blas
        else "  (not OpenBLAS: no openblas_get_config)",
        f"LAPACKE: {r['lapacke_path']}",
        f"LAPACK: {r['lapack_path']}",
        f"threads: a step uses MLORC_PARAM_THREADS threads (default {r['default_threads']}, "
        f"range {r['threads_bounds'][0]}..{r['threads_bounds'][1]}; mlorc.torch: threads=); "
        f"{r['cpus_allowed']} of {r['cpu_count']} CPUs usable by this process",
    ]
    if "num_threads" in blas:
        lines.append(f"  OpenBLAS threads: {blas['num_threads']} "
                     f"({_PARALLEL.get(blas.get('parallel'), 'unknown')}; libmlorc never changes them)")
    env = ", ".join(f"{k}={v}" for k, v in r["environment"].items()) or "none set"
    lines += [
        f"  environment: {env}",
        f"python: {r['python']}",
        f"numpy {r['numpy'] or 'not installed'}, torch {r['torch'] or 'not installed'}",
    ]
    return "\n".join(lines)
