//! YAML file backend (placeholder until implemented).
use std::path::{Path, PathBuf};

use super::{InsertMode, StoreError};
use crate::task::{Task, TaskName};

/// A YAML file in the original tool's format.
#[derive(Debug)]
pub struct YamlStore {
    path: PathBuf,
}

impl YamlStore {
    /// Opens the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self { path: path.to_owned() })
    }
    /// Every task, sorted by name.
    pub fn list(&self) -> Result<Vec<Task>, StoreError> {
        todo!("{}", self.path.display())
    }
    /// The task called `name`.
    pub fn get(&self, _name: &TaskName) -> Result<Option<Task>, StoreError> {
        todo!()
    }
    /// Stores `task`.
    pub fn insert(&self, _task: &Task, _mode: InsertMode) -> Result<(), StoreError> {
        todo!()
    }
    /// Removes the task called `name`.
    pub fn remove(&self, _name: &TaskName) -> Result<Task, StoreError> {
        todo!()
    }
}
