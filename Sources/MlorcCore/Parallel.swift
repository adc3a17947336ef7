#if canImport(Glibc)
import Glibc
#endif

/// Runs `body(part)` for part in 0..<parts, on the calling thread plus up to
/// parts − 1 short-lived pthreads, and returns when all are done. Callers
/// split work so that each output element is computed by exactly one part in
/// a fixed order: results never depend on how many parts run.
func parallelFor(parts: Int, _ body: (Int) -> Void) {
    if parts <= 1 { body(0); return }
    withoutActuallyEscaping(body) { escapable in
        final class Job {
            let body: (Int) -> Void
            let part: Int
            init(_ body: @escaping (Int) -> Void, _ part: Int) { self.body = body; self.part = part }
        }
        var threads: [pthread_t] = []
        var inline: [Int] = []  // parts whose thread could not start run here
        for part in 1..<parts {
            let job = Unmanaged.passRetained(Job(escapable, part)).toOpaque()
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let job = Unmanaged<Job>.fromOpaque(raw!).takeRetainedValue()
                job.body(job.part)
                return nil
            }, job)
            if rc == 0 {
                threads.append(thread)
            } else {
                Unmanaged<Job>.fromOpaque(job).release()
                inline.append(part)
            }
        }
        escapable(0)
        for part in inline { escapable(part) }
        for thread in threads { pthread_join(thread, nil) }
    }
}

/// The half-open range of part `part` when `count` items are split into
/// `parts` contiguous pieces whose boundaries are multiples of `align`.
func partition(_ count: Int, parts: Int, part: Int, align: Int = 1) -> Range<Int> {
    let units = (count + align - 1) / align
    let lo = units * part / parts * align, hi = units * (part + 1) / parts * align
    return min(lo, count)..<min(hi, count)
}
