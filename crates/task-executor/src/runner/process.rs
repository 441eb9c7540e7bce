//! Spawning one run and supervising it (placeholder until implemented).
use tokio_util::sync::CancellationToken;

use super::{LogSink, PreparedTask, RunReport, RunRequest, RunnerConfig};

pub(super) async fn run(
    _config: &RunnerConfig,
    _task: &PreparedTask,
    _request: RunRequest,
    _logs: &dyn LogSink,
    _cancel: &CancellationToken,
) -> RunReport {
    todo!()
}
