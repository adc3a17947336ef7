import MlorcCore
#if canImport(Glibc)
import Glibc
#endif

/// What an `mlorc_optimizer *` points to: the core optimizer plus the
/// last-error text, kept as a C string that stays valid until the next call.
final class Handle {
    let optimizer: Optimizer
    private(set) var lastError: UnsafeMutablePointer<CChar>

    init(_ optimizer: Optimizer) {
        self.optimizer = optimizer
        lastError = strdup("")
    }

    deinit { free(lastError) }

    func setLastError(_ message: String) {
        guard let copy = strdup(message) else { return }  // keep the old text if out of memory
        free(lastError)
        lastError = copy
    }

    static func from(_ p: OpaquePointer?) -> Handle? {
        p.map { Unmanaged<Handle>.fromOpaque(UnsafeRawPointer($0)).takeUnretainedValue() }
    }
}

/// Runs `body`, mapping its error to a status code and recording the message.
func status(_ handle: Handle?, _ body: () throws(MlorcError) -> Void) -> Int32 {
    do {
        try body()
        return 0
    } catch {
        handle?.setLastError(error.message)
        return error.code.rawValue
    }
}

func cString(_ s: StaticString) -> UnsafePointer<CChar> {
    UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

func statusText(_ code: Int32) -> StaticString {
    switch code {
    case 0: "success"
    case 1: "a required pointer argument is NULL"
    case 2: "invalid argument"
    case 3: "invalid tensor shape"
    case 4: "invalid rank for this tensor"
    case 5: "hyperparameter value out of range"
    case 6: "hyperparameter not known to this optimizer's rule"
    case 7: "state buffer too small"
    case 8: "state corrupted"
    case 9: "state layout version not supported"
    case 10: "state belongs to another rule, shape or dtype"
    case 11: "gradient contains NaN or infinity; step refused"
    case 12: "out of memory"
    case 13: "linear algebra (LAPACK) failure"
    case 14: "unsupported dtype"
    case 15: "the reducer failed or returned inconsistent sums; step refused"
    default: "unknown status"
    }
}
