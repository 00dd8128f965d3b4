//! The node's compute services: which devices a node runs on (`--devices`), and starting one
//! search worker per device.
//!
//! Owns: `DeviceSpec` and the parsing of a device list (`0,1,cpu`, `all`), turning the list
//! (or, without one, the single `--backend`/`--adapter` choice) into backend openers, and
//! starting every worker at once so the devices are measured side by side, as they will run.
//! A device that cannot be opened stops the node: the operator named it.
//!
//! Devices are fixed at start: `all` expands to the adapters present then, and a device added
//! while the node runs is not picked up until it restarts.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::worker::{DeviceEvent, Opener, Ready, Worker};
use crate::search::{BackendChoice, SearchError, gpu, open_backend};

/// One device of a `--devices` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU backend (`cpu`), sized by `--threads`.
    Cpu,
    /// A GPU adapter by index or (part of) its name, as `--adapter` takes it; software
    /// adapters (lavapipe) included.
    Gpu(String),
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Gpu(adapter) => write!(f, "gpu {adapter}"),
        }
    }
}

/// The devices a node runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    /// These, in this order.
    List(Vec<DeviceSpec>),
    /// Every hardware GPU adapter present at start, then the CPU. Software adapters are left
    /// out: they run on the same cores as the CPU backend.
    All,
}

/// Why a device list does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceListError {
    #[error("the device list is empty")]
    Empty,
    #[error("an empty entry in the device list {0:?}")]
    EmptyEntry(String),
    #[error("device {0:?} is named twice")]
    Duplicate(String),
}

impl FromStr for Devices {
    type Err = DeviceListError;

    /// `all`, or a comma-separated list of adapter indexes or names and `cpu`.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let list = list.trim();
        if list.is_empty() {
            return Err(DeviceListError::Empty);
        }
        if list.eq_ignore_ascii_case("all") {
            return Ok(Devices::All);
        }
        let mut devices = Vec::new();
        for entry in list.split(',').map(str::trim) {
            if entry.is_empty() {
                return Err(DeviceListError::EmptyEntry(list.to_owned()));
            }
            let device =
                if entry.eq_ignore_ascii_case("cpu") { DeviceSpec::Cpu } else { DeviceSpec::Gpu(entry.to_owned()) };
            if devices.contains(&device) {
                return Err(DeviceListError::Duplicate(entry.to_owned()));
            }
            devices.push(device);
        }
        Ok(Devices::List(devices))
    }
}

impl Devices {
    /// The list, with `all` expanded to the adapters present now.
    pub fn resolve(&self) -> Vec<DeviceSpec> {
        match self {
            Devices::List(devices) => devices.clone(),
            Devices::All => gpu::list_adapters()
                .into_iter()
                .filter(|adapter| !adapter.software)
                .map(|adapter| DeviceSpec::Gpu(adapter.index.to_string()))
                .chain([DeviceSpec::Cpu])
                .collect(),
        }
    }
}

/// What to open: a label for logs and errors, and the opener.
pub(crate) struct Planned {
    pub label: String,
    pub open: Opener,
}

impl fmt::Debug for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Planned").field("label", &self.label).finish_non_exhaustive()
    }
}

/// The openers for `devices`; `threads` sizes the CPU.
pub(crate) fn plan(devices: &[DeviceSpec], threads: Option<usize>) -> Vec<Planned> {
    devices
        .iter()
        .map(|device| {
            let open: Opener = match device.clone() {
                DeviceSpec::Cpu => Box::new(move || open_backend(BackendChoice::Cpu, None, threads)),
                DeviceSpec::Gpu(adapter) => Box::new(move || open_backend(BackendChoice::Gpu, Some(&adapter), None)),
            };
            Planned { label: device.to_string(), open }
        })
        .collect()
}

/// The one opener of a node without `--devices`: today's `--backend`/`--adapter` choice.
pub(crate) fn plan_single(choice: BackendChoice, adapter: Option<String>, threads: Option<usize>) -> Planned {
    Planned {
        label: format!("--backend {choice:?}").to_lowercase(),
        open: Box::new(move || open_backend(choice, adapter.as_deref(), threads)),
    }
}

/// A started worker whose measurement is under way.
pub(crate) struct Starting {
    pub label: String,
    pub worker: Worker,
    pub ready: oneshot::Receiver<Result<Ready, SearchError>>,
}

/// Starts one worker per planned device, all at once; device ids are positions in `planned`.
pub(crate) fn start(
    planned: Vec<Planned>,
    measure_for: Duration,
    events: &mpsc::UnboundedSender<DeviceEvent>,
) -> std::io::Result<Vec<Starting>> {
    let mut started = Vec::with_capacity(planned.len());
    for (device, Planned { label, open }) in planned.into_iter().enumerate() {
        let (worker, ready) = Worker::start(device, open, measure_for, events.clone())?;
        started.push(Starting { label, worker, ready });
    }
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_lists_parse() {
        let gpu = |s: &str| DeviceSpec::Gpu(s.to_owned());
        assert_eq!("0,1,cpu".parse(), Ok(Devices::List(vec![gpu("0"), gpu("1"), DeviceSpec::Cpu])));
        assert_eq!(" CPU , rtx 3090 ".parse(), Ok(Devices::List(vec![DeviceSpec::Cpu, gpu("rtx 3090")])));
        assert_eq!("all".parse(), Ok(Devices::All));
        assert_eq!("".parse::<Devices>(), Err(DeviceListError::Empty));
        assert_eq!("0,,cpu".parse::<Devices>(), Err(DeviceListError::EmptyEntry("0,,cpu".into())));
        assert_eq!("cpu,0,cpu".parse::<Devices>(), Err(DeviceListError::Duplicate("cpu".into())));
    }

    #[test]
    fn all_ends_with_the_cpu_and_leaves_out_software_adapters() {
        let devices = Devices::All.resolve();
        assert_eq!(devices.last(), Some(&DeviceSpec::Cpu));
        let adapters = gpu::list_adapters();
        for device in &devices[..devices.len() - 1] {
            let DeviceSpec::Gpu(index) = device else { panic!("{device:?}") };
            let adapter = &adapters[index.parse::<usize>().unwrap()];
            assert!(!adapter.software, "{adapter:?}");
        }
    }
}
