//! An OPA sidecar as the policy engine (placeholder: being written).
