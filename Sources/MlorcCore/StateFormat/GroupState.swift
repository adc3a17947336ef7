/// The caller-owned state of a group of tensors stepped together by a
/// rule with a group state (RuleEntry.groupState): the step-size estimate d and
/// what it is computed from. 128 bytes, native-endian:
///
///     0  magic u64 "MLORCGS1"   8  layout version u32   12 rule u32
///     16 step u64 (group steps taken)                  24 d f64
///     32 d0 f64 (the initial estimate)                 40 d_max f64
///     48 numerator f64 (the estimate's running numerator, see DAdaptation)
///     56..<120 reserved (0)                            120 checksum u64 over 0..<120
struct GroupState: Equatable {
    static let bytes = 128
    static let magic: UInt64 = 0x3153_4743_524F_4C4D  // "MLORCGS1" little-endian
    static let layoutVersion: UInt32 = 1

    var rule: RuleKind
    var step: UInt64 = 0
    var d: Double, d0: Double, dMax: Double
    var numerator = 0.0

    init(rule: RuleKind, d0: Double) {
        self.rule = rule
        (d, self.d0, dMax) = (d0, d0, d0)
    }

    func write(to p: UnsafeMutableRawPointer) {
        p.initializeMemory(as: UInt8.self, repeating: 0, count: Self.bytes)
        p.storeBytes(of: Self.magic, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: Self.layoutVersion, toByteOffset: 8, as: UInt32.self)
        p.storeBytes(of: UInt32(rule.rawValue), toByteOffset: 12, as: UInt32.self)
        p.storeBytes(of: step, toByteOffset: 16, as: UInt64.self)
        p.storeBytes(of: d, toByteOffset: 24, as: Double.self)
        p.storeBytes(of: d0, toByteOffset: 32, as: Double.self)
        p.storeBytes(of: dMax, toByteOffset: 40, as: Double.self)
        p.storeBytes(of: numerator, toByteOffset: 48, as: Double.self)
        p.storeBytes(of: Checksum.of(UnsafeRawPointer(p), count: 120), toByteOffset: 120, as: UInt64.self)
    }

    /// Reads and validates a group state; never reads past `bytes`.
    static func read(_ p: UnsafeRawPointer, bytes: Int) throws(MlorcError) -> GroupState {
        guard bytes >= Self.bytes else {
            throw MlorcError(.stateTooSmall, "group state has \(bytes) bytes; it needs \(Self.bytes)")
        }
        func u64(_ o: Int) -> UInt64 { p.loadUnaligned(fromByteOffset: o, as: UInt64.self) }
        func f64(_ o: Int) -> Double { p.loadUnaligned(fromByteOffset: o, as: Double.self) }
        guard u64(0) == magic else {
            throw MlorcError(.stateCorrupted, "group state does not start with the libmlorc group magic (not a group state, or overwritten)")
        }
        let version = p.loadUnaligned(fromByteOffset: 8, as: UInt32.self)
        guard version == layoutVersion else {
            throw MlorcError(.stateVersion, "group state layout version \(version) is not supported (this library reads version \(layoutVersion)); "
                             + versionCause(version, current: layoutVersion, sealed: Checksum.of(p, count: 120) == u64(120)))
        }
        guard Checksum.of(p, count: 120) == u64(120) else {
            throw MlorcError(.stateCorrupted, "group state checksum does not match (corrupted)")
        }
        let rawRule = Int32(truncatingIfNeeded: p.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
        guard let rule = RuleKind(rawValue: rawRule), rule.adaptsStepSize else {
            throw MlorcError(.stateCorrupted, "group state names rule \(rawRule), which keeps no group state")
        }
        var g = GroupState(rule: rule, d0: f64(32))
        (g.step, g.d, g.dMax, g.numerator) = (u64(16), f64(24), f64(40), f64(48))
        // Values no step can write (d never falls below d0; all finite).
        let plausible = (1e-12...1e6).contains(g.d0) && g.d >= g.d0 && g.d <= 1e300 && g.dMax >= g.d0 && g.dMax <= 1e300
            && g.numerator.isFinite && g.step < StateFormat.stepLimit
        guard plausible, (56..<120).allSatisfy({ p.load(fromByteOffset: $0, as: UInt8.self) == 0 }) else {
            throw MlorcError(.stateCorrupted, "group state holds values no step can write (d = \(g.d), d0 = \(g.d0), d_max = \(g.dMax), step \(g.step))")
        }
        return g
    }
}

/// A validated group state as the C API reports it (mlorc_group_state_inspect).
package struct GroupDescription {
    package let layoutVersion: UInt32, rule: Int32
    package let step: UInt64
    package let d: Double, d0: Double, dMax: Double, numerator: Double

    package init(_ p: UnsafeRawPointer, bytes: Int) throws(MlorcError) {
        let g = try GroupState.read(p, bytes: bytes)
        layoutVersion = GroupState.layoutVersion
        rule = g.rule.rawValue
        step = g.step
        (d, d0, dMax, numerator) = (g.d, g.d0, g.dMax, g.numerator)
    }
}
