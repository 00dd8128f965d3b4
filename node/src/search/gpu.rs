//! Placeholder until the wgpu backend lands (being written now).
use std::sync::atomic::AtomicBool;
use super::{Backend, BackendKind, SearchError, SearchJob, SearchReport};
#[derive(Debug)]
pub struct GpuBackend;
impl GpuBackend {
    pub fn open(_adapter: Option<&str>, _allow_software: bool) -> Result<Self, SearchError> {
        Err(SearchError::NoAdapter(String::new()))
    }
}
impl Backend for GpuBackend {
    fn kind(&self) -> BackendKind { BackendKind::Gpu }
    fn device(&self) -> String { String::new() }
    fn search(&mut self, _job: &SearchJob, _cancel: &AtomicBool) -> Result<SearchReport, SearchError> {
        Err(SearchError::NoAdapter(String::new()))
    }
}
