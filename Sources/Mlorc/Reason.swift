import MlorcCore

/// For the functions without a handle (mlorc_state_check,
/// mlorc_group_state_check): runs `body` and puts its failure's message, or
/// "" on success, into the caller's buffer.
func status(why: UnsafeMutablePointer<CChar>?, bytes: Int, _ body: () throws(MlorcError) -> Void) -> Int32 {
    do {
        try body()
        copyReason("", to: why, bytes: bytes)
        return 0
    } catch {
        copyReason(error.message, to: why, bytes: bytes)
        return error.code.rawValue
    }
}

/// Copies `message` NUL-terminated into `why` (`bytes` bytes, a size_t),
/// cut to fit. Writes nothing when `why` is NULL or `bytes` is 0.
func copyReason(_ message: String, to why: UnsafeMutablePointer<CChar>?, bytes: Int) {
    let capacity = UInt(bitPattern: bytes)
    guard let why, capacity > 0 else { return }
    let utf8 = Array(message.utf8)
    let length = Int(min(UInt(utf8.count), capacity - 1))
    for i in 0..<length { why[i] = CChar(bitPattern: utf8[i]) }
    why[length] = 0
}
