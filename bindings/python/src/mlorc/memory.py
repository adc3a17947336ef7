"""Optimizer memory of a model under MLorc, against dense AdamW."""
from dataclasses import dataclass, field

from . import _native
from ._policy import resolved_storage, storage_request
from ._shapes import matrix_shape


@dataclass
class MemoryReport:
    """Per-parameter rows (name, shape, storage, state_bytes, dense_adamw_bytes)
    and totals. dense_adamw_bytes counts AdamW's two fp32 moments."""

    rows: list = field(default_factory=list)
    state_bytes: int = 0
    dense_adamw_bytes: int = 0

    @property
    def saving(self):
        """Fraction of dense AdamW's state that MLorc does not need."""
        return 1 - self.state_bytes / self.dense_adamw_bytes if self.dense_adamw_bytes else 0.0

    def __str__(self):
        width = max([len(r["name"]) for r in self.rows] + [9])
        lines = [f"{'parameter':<{width}}  {'shape':<16} {'storage':<8} {'mlorc':>12} {'dense AdamW':>12}"]
        for r in self.rows:
            lines.append(f"{r['name']:<{width}}  {str(tuple(r['shape'])):<16} {r['storage']:<8} "
                         f"{r['state_bytes']:>12,} {r['dense_adamw_bytes']:>12,}")
        lines.append(f"{'total':<{width}}  {'':<16} {'':<8} {self.state_bytes:>12,} "
                     f"{self.dense_adamw_bytes:>12,}  ({100 * self.saving:.1f}% saved)")
        return "\n".join(lines)


def memory_report(model, rank=4, rule="adamw", oversampling=0, compress=None):
    """Bytes of optimizer state each parameter of `model` needs under MLorc
    (rank, oversampling, compress= policy as in mlorc.torch) and under dense
    AdamW. `model` is a torch module or an iterable of (name, tensor) pairs."""
    named = model.named_parameters() if hasattr(model, "named_parameters") else model
    handle = _native.Handle(_native.rule_code(rule))
    _native.set_hyper(handle, "rank", rank)
    _native.set_hyper(handle, "oversampling", oversampling)
    report = MemoryReport()
    for name, param in named:
        numel = 1
        for d in param.shape:
            numel *= int(d)
        if numel == 0:
            continue
        rows, cols = matrix_shape(param.shape)
        request = storage_request(compress, name, param, rank)
        size = handle.state_size(rows, cols, request)
        storage = _native.STORAGE_NAMES[resolved_storage(handle, rows, cols, request)]
        report.rows.append(dict(name=name, shape=tuple(param.shape), storage=storage,
                                state_bytes=size, dense_adamw_bytes=8 * numel))
        report.state_bytes += size
        report.dense_adamw_bytes += 8 * numel
    return report
