//! Pool addresses: `stratum+tcp://HOST:PORT`, or `stratum+ssl://` / `stratum+tls://` for a
//! pool reached over TLS. Parsed once, here, for `hashgrid-node mine` and the coordinator's
//! accounts.

/// A pool's address, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolUrl {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

/// Why a pool URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad pool URL {url:?}: {reason} (expected stratum+tcp://HOST:PORT or stratum+ssl://HOST:PORT)")]
pub struct PoolUrlError {
    url: String,
    reason: &'static str,
}

impl PoolUrl {
    /// `HOST:PORT` to connect to (`[HOST]:PORT` for an IPv6 literal), on `port` if given.
    pub fn addr(&self, port: Option<u16>) -> String {
        let port = port.unwrap_or(self.port);
        match self.host.contains(':') {
            true => format!("[{}]:{port}", self.host),
            false => format!("{}:{port}", self.host),
        }
    }
}

impl std::str::FromStr for PoolUrl {
    type Err = PoolUrlError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |reason| PoolUrlError { url: url.chars().take(200).collect(), reason };
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "stratum+tcp" => false,
            "stratum+ssl" | "stratum+tls" => true,
            _ => return Err(bad("unknown scheme")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let port: u16 = port.parse().map_err(|_| bad("bad port"))?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if host.is_empty() || port == 0 || host.len() > 253 || host.contains(['/', '@', ' ']) {
            return Err(bad("bad host or port"));
        }
        Ok(PoolUrl { host: host.to_owned(), port, tls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_urls_parse() {
        let url = |host: &str, port, tls| Ok(PoolUrl { host: host.into(), port, tls });
        assert_eq!("stratum+tcp://pool.example:3333".parse(), url("pool.example", 3333, false));
        assert_eq!("stratum+ssl://pool.example:443/".parse(), url("pool.example", 443, true));
        assert_eq!("STRATUM+TLS://127.0.0.1:1".parse(), url("127.0.0.1", 1, true));
        assert_eq!("stratum+tcp://[::1]:3333".parse(), url("::1", 3333, false));
        for bad in ["pool.example:3333", "http://x:1", "stratum+tcp://x", "stratum+tcp://:1", "stratum+tcp://x:0"] {
            assert!(bad.parse::<PoolUrl>().is_err(), "{bad}");
        }
        let v6: PoolUrl = "stratum+tcp://[::1]:3333".parse().unwrap();
        assert_eq!(v6.addr(None), "[::1]:3333");
        assert_eq!(v6.addr(Some(1)), "[::1]:1");
    }
}
