import CLinearAlgebra

#if canImport(Glibc)
import Glibc
#endif

/// OpenBLAS's own threads, held at one while the library's LAPACK calls run.
/// Those calls factor tall, thin panels (m x k with k a few dozen at most),
/// where OpenBLAS's threads give little; and after a threaded call they spin
/// (sched_yield) for tens of milliseconds, taking a core from the step's own
/// threads. Measured (`bench_step mofasgd|came lowrank 4 4096 4096 2 6`, 5
/// interleaved rounds, OPENBLAS_NUM_THREADS=1 against the default of 2):
/// MoFaSGD 30.2 → 26.8 ms, CAME 53.3 → 47.3 ms (docs/architecture.md,
/// "OpenBLAS threads"). The caller's setting is restored when the last
/// concurrent call returns, so a host using the same OpenBLAS keeps its own.
enum BLASThreads {
    private static let lock: UnsafeMutablePointer<pthread_mutex_t> = {
        let m = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        pthread_mutex_init(m, nil)
        return m
    }()
    // Guarded by `lock`: calls inside `single` now, and the setting they replaced.
    nonisolated(unsafe) private static var depth = 0
    nonisolated(unsafe) private static var saved: Int32 = 1

    /// body() with OpenBLAS at one thread.
    static func single<T>(_ body: () throws(MlorcError) -> T) throws(MlorcError) -> T {
        pthread_mutex_lock(lock)
        if depth == 0 {
            saved = openblas_get_num_threads()
            if saved != 1 { openblas_set_num_threads(1) }
        }
        depth += 1
        pthread_mutex_unlock(lock)
        defer {
            pthread_mutex_lock(lock)
            depth -= 1
            if depth == 0 && saved != 1 { openblas_set_num_threads(saved) }
            pthread_mutex_unlock(lock)
        }
        return try body()
    }
}
