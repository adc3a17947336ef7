/// The update rules. Raw values equal `mlorc_rule`.
package enum RuleKind: Int32, CaseIterable {
    case adamW = 1
    case lion = 2
    case adopt = 3
    case galoreAdamW = 4
    case came = 5
    case prodigy = 6
    case dadaptLion = 7
    case mofasgd = 8

    /// This rule's entry in the registry: everything rule-specific the handle,
    /// the state format and the driver need.
    var entry: RuleEntry { RuleRegistry.entry(self) }

    /// Rules whose step size is estimated over a group of tensors (D-adaptation):
    /// they step with a group state and keep sliced statistics per tensor.
    var adaptsStepSize: Bool { entry.groupState }

    /// Moment slots of the rule's state.
    var momentCount: Int { entry.momentSlots }
}

