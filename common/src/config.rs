//! What configuration files of both binaries share: `ConfigError`, turning a parser's error (its
//! message and the byte span it points at) into one line that names the line and the key, and,
//! with the `config` feature, the one TOML loader (`load_toml`, `parse_toml`).

use std::ops::Range;
#[cfg(feature = "config")]
use std::path::Path;

#[cfg(feature = "config")]
use serde::de::DeserializeOwned;

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Reads a TOML file into `T`: the one configuration loader of both binaries.
#[cfg(feature = "config")]
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    parse_toml(&text).map_err(|e| match e {
        ConfigError::Parse { detail, .. } => ConfigError::Parse { path: path.display().to_string(), detail },
        other => other,
    })
}

/// Parses TOML text into `T`; an error names the line and the key.
#[cfg(feature = "config")]
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str(text)
        .map_err(|e| ConfigError::Parse { path: "config".into(), detail: locate_error(text, e.span(), e.message()) })
}

/// "line L, key `K`: MESSAGE" (or "line L: MESSAGE" when the line has no key), on one line.
pub fn locate_error(text: &str, span: Option<Range<usize>>, message: &str) -> String {
    let message = message.trim().replace('\n', " ");
    let Some(span) = span else { return message };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    let key = line.split_once('=').map(|(key, _)| key.trim()).filter(|k| !k.is_empty() && !k.starts_with('#'));
    match key {
        Some(key) => format!("line {line_no}, key `{key}`: {message}"),
        None => format!("line {line_no}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_line_and_the_key() {
        let text = "a = 1\nbee = \"x\"\n";
        assert_eq!(locate_error(text, Some(6..9), "bad\nthing"), "line 2, key `bee`: bad thing");
        assert_eq!(locate_error(text, Some(0..1), "no"), "line 1, key `a`: no");
        assert_eq!(locate_error("[table\n", Some(0..1), "unclosed"), "line 1: unclosed");
        assert_eq!(locate_error(text, None, "whole file"), "whole file");
        assert_eq!(locate_error(text, Some(999..1000), "past the end"), "line 3: past the end");
    }
}
