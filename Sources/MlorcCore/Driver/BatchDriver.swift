/// The one batch driver of every rule and storage:
///   validate every argument → prepare every tensor (read-only) → the plan's
///   reductions → verify every tensor's outputs (read-only) → commit every
///   tensor → headers and checksums → the plan's own writes (group state).
/// A failure before the commits changes nothing; the commits cannot fail
/// on valid input (their checks happened in prepare and verify).
extension Optimizer {
    /// One step of every tensor of `args`. `group` is the group state of the
    /// D-adaptation rules (required by them, refused by the others).
    package func step(_ args: [TensorArgs], lr: Double, group: UnsafeMutableRawPointer? = nil,
                      groupBytes: Int = 0) throws(MlorcError) {
        guard lr.isFinite, lr >= 0 else {
            throw MlorcError(.invalidArgument, "lr = \(lr) must be finite and >= 0")
        }
        let entry = rule.entry
        let binding = try bindGroup(group, bytes: groupBytes)
        // No tensors: the checks above are the whole call (the group state is not advanced).
        if args.isEmpty { return }
        var tensors: [Prepared] = []
        tensors.reserveCapacity(args.count)
        for (i, a) in args.enumerated() {
            do { tensors.append(try validate(a)) } catch { throw error.inTensor(i) }
        }
        try Self.checkNoOverlap(tensors, group: group)
        try entry.step(self, tensors, lr, binding)
    }

    /// The group state of a D-adaptation rule, read and checked (nil for
    /// the other rules, which must get none).
    func bindGroup(_ group: UnsafeMutableRawPointer?, bytes: Int) throws(MlorcError) -> GroupBinding? {
        guard rule.entry.groupState else {
            guard group == nil else { throw MlorcError(.invalidArgument, "rule \(rule) keeps no group state: pass NULL") }
            return nil
        }
        guard let group else {
            throw MlorcError(.nullPointer, "rule \(rule) estimates its step size over a group of tensors: step it with a group state (mlorc_step_group)")
        }
        let g = try GroupState.read(group, bytes: bytes)
        guard g.rule == rule else {
            throw MlorcError(.stateMismatch, "group state belongs to rule \(g.rule) but this optimizer is \(rule)")
        }
        guard g.step + 1 < StateFormat.stepLimit else {
            throw MlorcError(.stateCorrupted, "group state step counter \(g.step) is at its limit (2^53 - 1)")
        }
        return GroupBinding(state: g, pointer: group)
    }

    /// Runs `plan` over validated tensors.
    func drive<Plan: BatchPlan>(_ plan: inout Plan, _ tensors: [Prepared]) throws(MlorcError) {
        var context = StepContext(workspace: workspace, pool: pool, threads: hyper.threads)
        defer { workspace = context.workspace }  // keeps what the passes allocated
        var offsets: [Int] = [], total = 0
        for t in tensors {
            offsets.append(total)
            total += plan.regionFloats(t)
        }
        let regions = try context.workspace.floats(plan.regionSlot, max(total, 16))
        var steps = tensors.indices.map { plan.makeStep(tensors[$0], region: regions + offsets[$0]) }
        for i in steps.indices {
            let finite: Bool
            do { finite = try steps[i].prepare(&context) } catch { throw error.inTensor(i) }
            guard finite else { throw MlorcError(.nonFinite, "tensor \(i): \(steps[i].refusal)") }
        }
        try plan.reduce(&steps)
        for i in steps.indices {
            let problem: String?
            do { problem = try steps[i].verify(&context) } catch { throw error.inTensor(i) }
            if let problem {
                throw MlorcError(.nonFinite, "tensor \(i): \(problem); step refused, nothing was changed")
            }
        }
        for i in steps.indices {
            do { try steps[i].commit(&context) } catch { throw error.inTensor(i) }
            var header = tensors[i].header
            if header.storage == .lowRank {
                header.payloadChecksum = Checksum.of(UnsafeRawPointer(tensors[i].payload), count: header.payloadBytes)
            }
            header.step += 1
            StateFormat.write(header, to: tensors[i].state)
        }
        plan.finish()
    }
}
