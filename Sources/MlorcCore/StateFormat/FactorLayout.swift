/// One moment's factors inside a state: M̃ = U · diag(s) · Vt.
struct Factors {
    let u: UnsafeMutablePointer<Float>   // rows x rank, row-major
    let s: UnsafeMutablePointer<Float>   // rank
    let vt: UnsafeMutablePointer<Float>  // rank x cols: Panel layout, or row-major where a storage says so
}

/// Where moment k's factors lie in a low-rank payload: U (rows x rank,
/// row-major), s (rank), Vt (rank x cols), moment after moment. The one
/// place that knows these offsets.
extension Factors {
    init(_ h: StateFormat.Header, payload: UnsafeMutablePointer<Float>, moment k: Int) {
        let base = payload + k * h.floatsPerMoment
        self.init(u: base, s: base + h.rows * h.rank, vt: base + h.rows * h.rank + h.rank)
    }
}
