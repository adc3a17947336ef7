/// A failure with the C API's status code and a message naming what was wrong.
/// Raw values equal `mlorc_status` in include/mlorc.h.
package struct MlorcError: Error, Equatable {
    package enum Code: Int32 {
        case nullPointer = 1
        case invalidArgument = 2
        case invalidShape = 3
        case invalidRank = 4
        case paramOutOfRange = 5
        case unknownParam = 6
        case stateTooSmall = 7
        case stateCorrupted = 8
        case stateVersion = 9
        case stateMismatch = 10
        case nonFinite = 11
        case outOfMemory = 12
        case linearAlgebra = 13
        case unsupportedDtype = 14
        case reduction = 15
    }

    package let code: Code
    package let message: String

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// The same error with "tensor i: " in front, for batched calls.
    func inTensor(_ index: Int) -> MlorcError {
        MlorcError(code, "tensor \(index): \(message)")
    }
}
