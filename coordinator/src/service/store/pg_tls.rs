//! TLS to PostgreSQL: what the `--store` URL asks for (`sslmode`, `sslrootcert`, as libpq
//! names them), and the rustls connector that does it.
//!
//! - `sslmode=require`, `verify-ca` or `verify-full`: TLS only, and the server is always
//!   verified as `verify-full` does: its certificate chain against `sslrootcert` (a PEM file of
//!   CA certificates; without it, the system's roots) and its name against the URL's host (a
//!   name or an IP address in the certificate's subject alternative names). hashgrid does not
//!   offer TLS without verification: an unverified server could take the writes.
//! - No `sslmode`, or `disable` or `prefer`: no TLS, as before (a server that has TLS on is
//!   still reached in plain text).
//!
//! The client crate knows `sslmode` only up to `require` and rejects `sslrootcert`, so `split`
//! takes them out of the connection string and hands it the rest with `sslmode=require`.

use std::path::PathBuf;

use tokio_postgres_rustls::MakeRustlsConnect;

/// Whether a connection uses TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tls {
    Off,
    /// TLS, the server verified against `sslrootcert` (`None`: the system's roots).
    Verified {
        root_cert: Option<PathBuf>,
    },
}

/// The connection string for the client crate, and the TLS that `conninfo` (a `postgres://`
/// URL or a `key=value` string) asks for; an error names a bad `sslmode` or `sslrootcert`.
pub(crate) fn split(conninfo: &str) -> Result<(String, Tls), String> {
    let (head, params, separator) = if conninfo.contains("://") {
        match conninfo.split_once('?') {
            Some((head, query)) => (head, query, "&"),
            None => return Ok((conninfo.to_string(), Tls::Off)),
        }
    } else {
        ("", conninfo, " ")
    };
    let (mut kept, mut verified, mut root_cert) = (Vec::new(), false, None);
    for pair in params.split(separator).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", "require" | "verify-ca" | "verify-full")) => verified = true,
            Some(("sslrootcert", path)) if !path.is_empty() => root_cert = Some(PathBuf::from(path)),
            Some(("sslrootcert", _)) => return Err("sslrootcert is empty".into()),
            _ => kept.push(pair),
        }
    }
    if root_cert.is_some() && !verified {
        return Err("sslrootcert needs sslmode=verify-full (or require)".into());
    }
    if verified {
        kept.push("sslmode=require");
    }
    let rest = kept.join(separator);
    let conninfo = match (head, rest.is_empty()) {
        ("", _) => rest,
        (head, true) => head.to_string(),
        (head, false) => format!("{head}?{rest}"),
    };
    Ok((conninfo, if verified { Tls::Verified { root_cert } } else { Tls::Off }))
}

/// The connector for `Tls::Verified` (rustls with ring, as the rest of hashgrid).
pub(crate) fn connector(root_cert: Option<&PathBuf>) -> Result<MakeRustlsConnect, String> {
    let pem = match root_cert {
        Some(path) => Some(std::fs::read(path).map_err(|e| format!("sslrootcert {}: {e}", path.display()))?),
        None => None,
    };
    let config = hashgrid_common::stratum_net::client_config(pem.as_deref()).map_err(|e| match root_cert {
        Some(path) => format!("sslrootcert {}: {e}", path.display()),
        None => format!("{e}; give the server's CA with sslrootcert=PATH"),
    })?;
    Ok(MakeRustlsConnect::new((*config).clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_are_taken_out_of_the_connection_string() {
        let verified = |root: Option<&str>| Tls::Verified { root_cert: root.map(PathBuf::from) };
        assert_eq!(split("postgres://hg@db/hg").unwrap(), ("postgres://hg@db/hg".into(), Tls::Off));
        assert_eq!(
            split("postgres://hg@db/hg?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=3").unwrap(),
            ("postgres://hg@db/hg?connect_timeout=3&sslmode=require".into(), verified(Some("/etc/ca.pem")))
        );
        assert_eq!(
            split("postgres://hg@db/hg?sslmode=require").unwrap(),
            ("postgres://hg@db/hg?sslmode=require".into(), verified(None))
        );
        assert_eq!(
            split("postgres://hg@db/hg?sslmode=disable").unwrap(),
            ("postgres://hg@db/hg?sslmode=disable".into(), Tls::Off)
        );
        assert_eq!(
            split("host=db user=hg sslmode=verify-ca sslrootcert=ca.pem").unwrap(),
            ("host=db user=hg sslmode=require".into(), verified(Some("ca.pem")))
        );
        assert!(split("postgres://db/hg?sslrootcert=ca.pem").unwrap_err().contains("sslmode=verify-full"));
        assert!(split("postgres://db/hg?sslmode=verify-full&sslrootcert=").unwrap_err().contains("empty"));
    }

    #[test]
    fn a_missing_or_empty_root_file_is_named() {
        let missing = PathBuf::from("/nonexistent/ca.pem");
        let err = connector(Some(&missing)).err().expect("an error");
        assert!(err.starts_with("sslrootcert /nonexistent/ca.pem: "), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "").unwrap();
        let err = connector(Some(&empty)).err().expect("an error");
        assert!(err.contains("no certificate in the file"), "{err}");
    }
}
