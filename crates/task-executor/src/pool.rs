//! Running many tasks at once with bounded concurrency (placeholder until implemented).

/// A bounded pool of runs.
#[derive(Debug)]
pub struct Pool;
