//! What a peer can make the coordinator hold before it has authenticated, and what a node's
//! hello may carry.
//!
//! Owns: the hello deadline (`HELLO_DEADLINE`) and size cap (`MAX_HELLO`), the connection caps in total and per source
//! address (`ConnectionLimits`, from the configuration) and their bookkeeping (`Admission`:
//! a connection is counted from its `Incoming` until its task ends, through the `Admitted`
//! guard it holds), and the identity rule for a node's hello (`check_identity`): its name
//! follows the account and chain name rule, its software version is printable ASCII of at
//! most `MAX_VERSION_LEN` bytes.
//!
//! The QUIC windows and stream counts that bound each connection's buffers are in
//! `tls::server_config`; together with these caps they bound the memory of peers that never
//! say hello to `ConnectionLimits::total` times about one frame (`tls::RECEIVE_WINDOW`) plus
//! `MAX_HELLO`, for at most `HELLO_DEADLINE`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hashgrid_common::message::{DeviceInfo, NodeHello};

use crate::core::accounts::valid_name;

/// How long a new connection may take to open its first stream and send its hello.
pub const HELLO_DEADLINE: Duration = Duration::from_secs(5);

/// The largest hello frame read (a hello is a token, a name, a version and a few devices: well
/// under 1 KiB), so a peer's partial hello holds at most this much.
pub const MAX_HELLO: usize = 64 << 10;

/// The longest software version a node may announce.
pub const MAX_VERSION_LEN: usize = 64;

/// The connection caps (`max_connections`, `max_connections_per_address` in the file), and
/// the bound on nodes' shares awaiting their commit (`max_unacknowledged_shares`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once, nodes and operators together.
    pub total: usize,
    /// Connections open at once from one IP address, or one IPv6 /64 (the block one host
    /// is usually given); a farm behind NAT shares one.
    pub per_address: usize,
    /// Shares taken from nodes and not yet answered, all connections together; at the bound,
    /// nodes' connections are not read until answers go out (`backlog`).
    pub unacknowledged_shares: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            total: 1024,
            per_address: 64,
            unacknowledged_shares: super::backlog::DEFAULT_MAX_UNACKNOWLEDGED,
        }
    }
}

/// Why a connection was refused before its handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} connections are open, the most allowed (max_connections)")]
    Total(usize),
    #[error("{1} connections from {0} are open, the most allowed (max_connections_per_address)")]
    PerAddress(IpAddr, usize),
}

/// The open connections, counted in total and per address.
#[derive(Debug, Clone)]
pub struct Admission {
    limits: ConnectionLimits,
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Admitted {
    address: IpAddr,
    open: Arc<Mutex<Open>>,
}

impl Admission {
    pub fn new(limits: ConnectionLimits) -> Admission {
        Admission { limits, open: Arc::default() }
    }

    /// Counts a connection from `address`, or says which cap it would exceed.
    pub fn admit(&self, address: IpAddr) -> Result<Admitted, Refusal> {
        let address = source(address);
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if open.total >= self.limits.total {
            return Err(Refusal::Total(open.total));
        }
        let from = open.by_address.entry(address).or_default();
        if *from >= self.limits.per_address {
            return Err(Refusal::PerAddress(address, *from));
        }
        *from += 1;
        open.total += 1;
        Ok(Admitted { address, open: self.open.clone() })
    }
}

/// The source a connection is counted against: its IPv4 address, or its IPv6 address's /64.
fn source(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        open.total -= 1;
        if let Some(from) = open.by_address.get_mut(&self.address) {
            *from -= 1;
            if *from == 0 {
                open.by_address.remove(&self.address);
            }
        }
    }
}

/// Whether a node's hello names it acceptably: the name by the account and chain name rule,
/// the version printable ASCII (no spaces) of 1 to `MAX_VERSION_LEN` bytes. The reason, to
/// close the connection with, when not.
pub fn check_identity(hello: &NodeHello) -> Result<(), String> {
    if !valid_name(&hello.name) {
        return Err(format!(
            "invalid node name \"{}\": use 1-64 ASCII letters, digits, '-', '_' or '.'",
            shown(&hello.name)
        ));
    }
    let version = &hello.software_version;
    if version.is_empty() || version.len() > MAX_VERSION_LEN || !version.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "invalid software version \"{}\": use 1-{MAX_VERSION_LEN} printable ASCII characters",
            shown(version)
        ));
    }
    if !DeviceInfo::list_is_valid(&hello.devices) {
        return Err(format!(
            "invalid device list: at most {} devices of kind cpu or gpu, named in 1-{} printable ASCII characters",
            DeviceInfo::MAX_PER_NODE,
            DeviceInfo::MAX_NAME_LEN
        ));
    }
    Ok(())
}

/// The start of a refused value, escaped, for a close reason (which must fit in a packet).
fn shown(value: &str) -> String {
    value.chars().take(MAX_VERSION_LEN).flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn hello(name: &str, version: &str) -> NodeHello {
        NodeHello {
            token: String::new(),
            name: name.into(),
            software_version: version.into(),
            standby: false,
            devices: Vec::new(),
            hashrate: 1.0,
        }
    }

    #[test]
    fn caps_count_in_total_and_per_address_and_free_on_drop() {
        let admission = Admission::new(ConnectionLimits { total: 3, per_address: 2, ..ConnectionLimits::default() });
        let (a, b) = (IpAddr::from(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::from(Ipv4Addr::new(10, 0, 0, 2)));
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::PerAddress(a, 2));
        let _b1 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).unwrap_err(), Refusal::Total(3));
        drop(a1);
        let _b2 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::Total(3));
        assert!(admission.admit(b).unwrap_err().to_string().contains("max_connections"));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let admission = Admission::new(ConnectionLimits { total: 10, per_address: 1, ..ConnectionLimits::default() });
        let _a = admission.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let refused = admission.admit("2001:db8:1:2:ffff::9".parse().unwrap()).unwrap_err();
        assert_eq!(refused, Refusal::PerAddress("2001:db8:1:2::".parse().unwrap(), 1));
        let _b = admission.admit("2001:db8:1:3::1".parse().unwrap()).unwrap();
        let _c = admission.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        assert!(admission.admit("10.0.0.1".parse().unwrap()).is_err());
    }

    #[test]
    fn names_follow_the_account_rule_and_versions_are_printable() {
        assert_eq!(check_identity(&hello("rig-07.lan_a", "0.3.0-rc.1+g1234")), Ok(()));
        for name in ["", "\u{1b}[2Jrig", "rig\nINFO forged line", "rig 7", "rigé", &"r".repeat(65)] {
            let reason = check_identity(&hello(name, "0.3.0")).unwrap_err();
            assert!(reason.starts_with("invalid node name") && !reason.contains(['\n', '\u{1b}']), "{reason}");
        }
        for version in ["", "0.3\u{1b}[2J", "0.3 beta", "0.3\n", &"1".repeat(65)] {
            let reason = check_identity(&hello("rig", version)).unwrap_err();
            assert!(reason.starts_with("invalid software version") && !reason.contains(['\n', '\u{1b}']), "{reason}");
        }
    }

    #[test]
    fn device_lists_are_capped_and_printable() {
        let device =
            |kind: &str, name: &str, hashrate: f64| DeviceInfo { kind: kind.into(), name: name.into(), hashrate };
        let mut ok = hello("rig", "0.3.0");
        ok.devices = vec![device("gpu", "NVIDIA H200 (0)", 6.5e9), device("cpu", "AMD EPYC 9654", 2e7)];
        assert_eq!(check_identity(&ok), Ok(()));
        let refused = [
            vec![device("gpu", "\u{1b}[2J", 1.0)],
            vec![device("gpu", "rig\u{202e}", 1.0)],
            vec![device("gpu", "", 1.0)],
            vec![device("gpu", &"n".repeat(DeviceInfo::MAX_NAME_LEN + 1), 1.0)],
            vec![device("fpga", "x", 1.0)],
            vec![device("cpu", "x", f64::NAN)],
            vec![device("cpu", "x", 1.0); DeviceInfo::MAX_PER_NODE + 1],
        ];
        for devices in refused {
            let reason = check_identity(&NodeHello { devices, ..ok.clone() }).unwrap_err();
            assert!(reason.starts_with("invalid device list"), "{reason}");
        }
    }
}
