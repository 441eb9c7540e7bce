//! Discovery: `<task> schema` (placeholder until implemented).
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::RunnerConfig;
use crate::protocol::AutoSchema;

/// Why `<task> schema` did not yield an AutoSchema.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Placeholder.
    #[error("`{path}` does not exist")]
    NotFound {
        /// The path.
        path: PathBuf,
    },
}

pub(super) async fn discover(
    _config: &RunnerConfig,
    _location: &Path,
    _timeout: Duration,
) -> Result<AutoSchema, DiscoveryError> {
    todo!()
}

pub(super) fn check_executable(_location: &Path) -> Result<PathBuf, DiscoveryError> {
    todo!()
}
