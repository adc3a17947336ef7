/// The seam between the batch driver and the storages. A step of a batch is
/// all-or-nothing: every tensor's `prepare` (reads only), the plan's
/// reductions over the batch, and every tensor's `verify` (reads only: would
/// the new weights and state be finite?) run before any tensor's `commit`
/// (writes). The driver knows nothing else of the rule or storage it runs.

/// One tensor's part of a batched step, as its storage carries it out.
protocol TensorStep {
    /// The read-only pass: sketches, finiteness, per-tensor sums. Returns
    /// false when the step must be refused as non-finite (`refusal` says why).
    mutating func prepare(_ context: inout StepContext) throws(MlorcError) -> Bool
    /// What a refusal by `prepare` says, after "tensor i: ".
    var refusal: String { get }
    /// After the reductions, with the step's final scalars: nil if every
    /// weight and state value the commit writes is finite, else why not.
    /// Reads only.
    mutating func verify(_ context: inout StepContext) throws(MlorcError) -> String?
    /// The writing pass: the weights and the state's payload (the driver
    /// writes the header and its checksums afterwards).
    mutating func commit(_ context: inout StepContext) throws(MlorcError)
}

/// How a rule steps a batch: one TensorStep per tensor, a scratch region per
/// tensor kept from prepare to commit, and the reductions over the batch.
protocol BatchPlan {
    associatedtype Step: TensorStep
    /// The workspace slot that holds every tensor's region.
    var regionSlot: Workspace.Slot { get }
    /// Floats of the region a tensor keeps from prepare to commit.
    func regionFloats(_ tensor: Optimizer.Prepared) -> Int
    func makeStep(_ tensor: Optimizer.Prepared, region: UnsafeMutablePointer<Float>) -> Step
    /// Between the passes: reductions over every prepared tensor (e.g. the
    /// D-adaptation estimate), which may refuse the step.
    mutating func reduce(_ steps: inout [Step]) throws(MlorcError)
    /// After every commit: what the plan writes besides the tensors.
    func finish()
}

extension BatchPlan {
    mutating func reduce(_ steps: inout [Step]) throws(MlorcError) {}
    func finish() {}
}

/// What a pass may use: the handle's scratch and worker threads.
struct StepContext {
    var workspace: Workspace
    let pool: ThreadPool
    let threads: Int

    /// Parts worth splitting `elements` of streaming work into.
    func parts(for elements: Int) -> Int { max(1, min(threads, elements / 32768)) }
}
