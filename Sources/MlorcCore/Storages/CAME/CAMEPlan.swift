/// CAME's batch: every tensor's CAMEStep, with its region in .sketches.
struct CAMEPlan: BatchPlan {
    let hyper: Hyperparameters
    let lr: Double

    var regionSlot: Workspace.Slot { .sketches }
    func regionFloats(_ t: Optimizer.Prepared) -> Int { CAMEStep.regionFloats(t.header, hyper) }
    func makeStep(_ t: Optimizer.Prepared, region: UnsafeMutablePointer<Float>) -> CAMETensorStep {
        CAMETensorStep(step: CAMEStep(hyper: hyper, tensor: t, region: region), lr: lr)
    }
}

struct CAMETensorStep: TensorStep {
    let step: CAMEStep
    let lr: Double

    var refusal: String {
        "gradient contains NaN or infinity, or CAME's statistics or new moment overflow float (or are zero with eps = 0); step refused, nothing was changed"
    }
    func prepare(_ context: inout StepContext) throws(MlorcError) -> Bool {
        try step.prepare(workspace: &context.workspace, pool: context.pool)
    }
    func verify(_ context: inout StepContext) throws(MlorcError) -> String? {
        let c = context  // read-only view; the scratch is lent separately
        return try step.verify(lr: lr, context: c, workspace: &context.workspace,
                               rowBoundsRecorded: step.preparesRowBounds)
    }
    func commit(_ context: inout StepContext) throws(MlorcError) {
        try step.commit(lr: lr, workspace: &context.workspace, pool: context.pool)
    }
}
