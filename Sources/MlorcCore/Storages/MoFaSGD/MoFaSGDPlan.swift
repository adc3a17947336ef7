/// MoFaSGD's batch: pass 1 checks every gradient and computes every tensor's
/// new momentum SVD into its region of .factorResults (reading only); pass 2
/// only writes the weights and states, and cannot fail.
struct MoFaSGDPlan: BatchPlan {
    let hyper: Hyperparameters
    let lr: Double

    var regionSlot: Workspace.Slot { .factorResults }
    func regionFloats(_ t: Optimizer.Prepared) -> Int { MoFaSGDStep.resultFloats(t.header) }
    func makeStep(_ t: Optimizer.Prepared, region: UnsafeMutablePointer<Float>) -> MoFaSGDTensorStep {
        MoFaSGDTensorStep(step: MoFaSGDStep(hyper: hyper, header: t.header, weights: t.weightRows(hyper), grad: t.gradRows,
                                            payload: t.payload, result: region), lr: lr)
    }
}

struct MoFaSGDTensorStep: TensorStep {
    let step: MoFaSGDStep
    let lr: Double

    var refusal: String {
        "gradient contains NaN or infinity (or entries beyond 1e14, or the new momentum overflows float); step refused, nothing was changed"
    }
    func prepare(_ context: inout StepContext) throws(MlorcError) -> Bool {
        try step.prepare(workspace: &context.workspace, pool: context.pool, parts: context.parts(for: step.m * step.n))
    }
    func verify(_ context: inout StepContext) throws(MlorcError) -> String? { step.verify(lr: lr, context: context) }
    func commit(_ context: inout StepContext) throws(MlorcError) {
        try step.commit(lr: lr, workspace: &context.workspace, pool: context.pool, parts: context.parts(for: step.m * step.n))
    }
}
