extension Optimizer {
    /// A MoFaSGD step over a batch: pass 1 checks every gradient and computes
    /// every tensor's new momentum SVD (reading only); pass 2 only writes the
    /// weights and states, and cannot fail. A refused step changes nothing.
    func runMoFaSGD(_ tensors: [Prepared], lr: Double) throws(MlorcError) {
        var offsets: [Int] = [], total = 0
        for t in tensors {
            offsets.append(total)
            total += MoFaSGDStep.resultFloats(t.header)
        }
        let results = try workspace.floats(.factorResults, max(total, 16))
        let steps = tensors.indices.map { i in
            MoFaSGDStep(hyper: hyper, header: tensors[i].header, weights: tensors[i].weights, grad: tensors[i].grad,
                        payload: tensors[i].payload, result: results + offsets[i])
        }
        for (i, s) in steps.enumerated() {
            let ok: Bool
            do { ok = try s.prepare(workspace: &workspace, pool: pool, parts: parts(for: s.m * s.n)) } catch { throw error.inTensor(i) }
            guard ok else {
                throw MlorcError(.nonFinite, "tensor \(i): gradient contains NaN or infinity (or entries beyond 1e14, or the new momentum overflows float); step refused, nothing was changed")
            }
        }
        for (i, s) in steps.enumerated() {
            s.commit(lr: lr, pool: pool, parts: parts(for: s.m * s.n))
            var header = s.header
            if header.storage == .lowRank {
                header.payloadChecksum = Checksum.of(UnsafeRawPointer(s.payload), count: header.payloadBytes)
            }
            header.step += 1
            StateFormat.write(header, to: tensors[i].state)
        }
    }
}
