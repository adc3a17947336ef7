#if canImport(Glibc)
import Glibc
#endif

/// A handle's worker threads: `run(parts:)` executes body(part) for every
/// part in 0..<parts on the calling thread and the workers, and returns when
/// all are done. Threads are started once and parked on a condition variable
/// between calls, so a step with many small tensors does not pay a thread
/// start per pass. Callers split work so that each output element is computed
/// by exactly one part in a fixed order: results never depend on how many
/// threads run or which thread takes which part.
///
/// The workers hold only the shared `Queue`, never the pool: releasing the
/// pool (with its handle, or when the thread count changes) shuts the queue
/// down and joins them.
final class ThreadPool {
    private let queue = Queue()
    private var threads: [pthread_t] = []
    var workerCount: Int { threads.count }

    /// Starts up to `workers` threads (fewer if the system refuses some; the
    /// caller's thread then does more of the parts).
    init(workers: Int) {
        for _ in 0..<max(0, workers) {
            let context = Unmanaged.passRetained(queue).toOpaque()
            var thread = pthread_t()
            if pthread_create(&thread, nil, { raw in
                Unmanaged<Queue>.fromOpaque(raw!).takeRetainedValue().workerLoop()
                return nil
            }, context) == 0 {
                threads.append(thread)
            } else {
                Unmanaged<Queue>.fromOpaque(context).release()
            }
        }
    }

    deinit {
        queue.shutDown()
        for thread in threads { pthread_join(thread, nil) }
    }

    func run(parts count: Int, _ work: (Int) -> Void) {
        if count <= 1 || threads.isEmpty {
            for part in 0..<max(count, 1) { work(part) }
            return
        }
        withoutActuallyEscaping(work) { queue.run(parts: count, $0) }
    }

    /// The work shared between the caller and the workers, under one mutex.
    private final class Queue {
        private let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        private let wake = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        private let finished = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        // Guarded by `lock`.
        private var body: ((Int) -> Void)?
        private var generation = 0, parts = 0, nextPart = 0, remaining = 0
        private var shuttingDown = false

        init() {
            pthread_mutex_init(lock, nil)
            pthread_cond_init(wake, nil)
            pthread_cond_init(finished, nil)
        }

        deinit {
            pthread_cond_destroy(wake)
            pthread_cond_destroy(finished)
            pthread_mutex_destroy(lock)
            lock.deallocate(); wake.deallocate(); finished.deallocate()
        }

        func run(parts count: Int, _ work: @escaping (Int) -> Void) {
            pthread_mutex_lock(lock)
            body = work
            parts = count
            nextPart = 0
            remaining = count
            generation &+= 1
            pthread_cond_broadcast(wake)
            takeParts()  // the caller works too; returns with `lock` held
            while remaining > 0 { pthread_cond_wait(finished, lock) }
            body = nil
            pthread_mutex_unlock(lock)
        }

        func shutDown() {
            pthread_mutex_lock(lock)
            shuttingDown = true
            pthread_cond_broadcast(wake)
            pthread_mutex_unlock(lock)
        }

        /// Runs parts until none is left. Called and returns with `lock` held.
        private func takeParts() {
            while nextPart < parts, let work = body {
                let part = nextPart
                nextPart += 1
                pthread_mutex_unlock(lock)
                work(part)
                pthread_mutex_lock(lock)
                remaining -= 1
                if remaining == 0 { pthread_cond_broadcast(finished) }
            }
        }

        func workerLoop() {
            pthread_mutex_lock(lock)
            var seen = generation
            while true {
                while generation == seen && !shuttingDown { pthread_cond_wait(wake, lock) }
                if shuttingDown { break }
                seen = generation
                takeParts()
            }
            pthread_mutex_unlock(lock)
        }
    }
}

/// The half-open range of part `part` when `count` items are split into
/// `parts` contiguous pieces whose boundaries are multiples of `align`.
func partition(_ count: Int, parts: Int, part: Int, align: Int = 1) -> Range<Int> {
    let units = (count + align - 1) / align
    let lo = units * part / parts * align, hi = units * (part + 1) / parts * align
    return min(lo, count)..<min(hi, count)
}
