#if canImport(Glibc)
import Glibc
#endif

/// The random test matrices of the randomized SVD, from Philox4x32-10
/// (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).
/// Counter-based: element e of the sketch for (seed, tensor id, step) is a pure
/// function of those four numbers, so a step never depends on generator state,
/// thread count or call history.
struct SketchGenerator {
    private let key: (UInt32, UInt32)
    private let step: UInt64

    init(seed: UInt64, tensorID: UInt64, step: UInt64) {
        // Mix seed and tensor id so nearby ids give unrelated keys.
        let mixed = Self.splitMix64(seed ^ Self.splitMix64(tensorID &+ 0x9E37_79B9_7F4A_7C15))
        key = (UInt32(truncatingIfNeeded: mixed), UInt32(truncatingIfNeeded: mixed >> 32))
        self.step = step
    }

    static func splitMix64(_ x: UInt64) -> UInt64 {
        var z = x &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Philox4x32 with 10 rounds on counter (block, step).
    func block(_ index: UInt64) -> (UInt32, UInt32, UInt32, UInt32) {
        var c = (UInt32(truncatingIfNeeded: index), UInt32(truncatingIfNeeded: index >> 32),
                 UInt32(truncatingIfNeeded: step), UInt32(truncatingIfNeeded: step >> 32))
        var k = key
        for _ in 0..<10 {
            let p0 = UInt64(0xD251_1F53) &* UInt64(c.0)
            let p1 = UInt64(0xCD9E_8D57) &* UInt64(c.2)
            c = (UInt32(truncatingIfNeeded: p1 >> 32) ^ c.1 ^ k.0, UInt32(truncatingIfNeeded: p1),
                 UInt32(truncatingIfNeeded: p0 >> 32) ^ c.3 ^ k.1, UInt32(truncatingIfNeeded: p0))
            k = (k.0 &+ 0x9E37_79B9, k.1 &+ 0xBB67_AE85)
        }
        return c
    }

    /// Fills `out[0..<count]` with standard normal samples (Box–Muller on
    /// Philox uniforms in (0, 1)); sample e depends only on e and the key.
    func fillNormals(_ out: UnsafeMutablePointer<Float>, count: Int) {
        var e = 0
        while e < count {
            let b = block(UInt64(e / 4))
            let u = (Self.unit(b.0), Self.unit(b.1), Self.unit(b.2), Self.unit(b.3))
            let r0 = (-2 * log(u.0)).squareRoot(), t0 = 2 * Double.pi * u.1
            let r1 = (-2 * log(u.2)).squareRoot(), t1 = 2 * Double.pi * u.3
            let z = SIMD4<Double>(r0 * cos(t0), r0 * sin(t0), r1 * cos(t1), r1 * sin(t1))
            for lane in 0..<min(4, count - e) {
                out[e + lane] = Float(z[lane])
            }
            e += 4
        }
    }

    /// Maps 32 random bits to the open interval (0, 1).
    private static func unit(_ bits: UInt32) -> Double {
        (Double(bits) + 0.5) * (1.0 / 4_294_967_296.0)
    }
}
