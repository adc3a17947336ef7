"""python -m mlorc: versions, library, kernels, BLAS and thread settings,
the lines to paste into a bug report."""
from .diagnostics import collect, format_report

print(format_report(collect()))
