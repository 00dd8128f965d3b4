//! The typed Stratum V1 methods and the results this side reads.
//!
//! [`Method::from_parts`] reads a method name and its params; [`Method::name`] and
//! [`Method::params`] write them back canonically (lowercase hex, 8 digits for 32-bit fields,
//! optional trailing params omitted when absent). Unknown methods keep their name and params.
//!
//! Byte orders as on the wire: `prevhash` in `mining.notify` is the header's previous-block
//! hash with each 4-byte word reversed; `version`, `nbits`, `ntime` and a submit's `nonce` and
//! version bits are big-endian hex of the header's little-endian fields. [`Notify`] keeps the
//! previous-block hash in header order, so the swap happens here and only here.
//!
//! Caps: [`MAX_BRANCH`] merkle branch entries, [`MAX_COINBASE`] bytes of coinb1 + coinb2,
//! [`MAX_EXTRANONCE`] bytes for each extranonce, [`MAX_TEXT`] bytes for names and ids; each is
//! checked before the field is decoded.

use serde_json::{Map, Value, json};

use super::StratumError;
use super::server::Password;
use crate::header::Hash256;
use crate::target::CompactTarget;

/// Most merkle branch entries accepted (2^32 transactions is beyond any block).
pub const MAX_BRANCH: usize = 32;
/// Most bytes of coinb1 + coinb2 accepted.
pub const MAX_COINBASE: usize = 32 * 1024;
/// Most bytes of extranonce1, and the largest extranonce2 size accepted.
pub const MAX_EXTRANONCE: usize = 32;
/// Most bytes of a job id, worker name, password, user agent or session id.
pub const MAX_TEXT: usize = 1024;

/// A Stratum V1 method with its params.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// `mining.configure` (BIP 310); only version rolling is understood.
    Configure(Configure),
    /// `mining.subscribe [user_agent, session_id]`.
    Subscribe {
        user_agent: Option<String>,
        session_id: Option<String>,
    },
    /// `mining.authorize [user, password]`; the password's `Debug` does not show it.
    Authorize {
        user: String,
        password: Option<Password>,
    },
    /// `mining.extranonce.subscribe []`.
    ExtranonceSubscribe,
    /// `mining.set_difficulty [difficulty]`; fractional values are allowed.
    SetDifficulty(f64),
    /// `mining.set_extranonce [extranonce1, extranonce2_size]`.
    SetExtranonce {
        extranonce1: Vec<u8>,
        extranonce2_size: usize,
    },
    /// `mining.set_version_mask [mask]`.
    SetVersionMask(u32),
    Notify(Notify),
    Submit(Submit),
    /// `mining.suggest_difficulty [difficulty]`.
    SuggestDifficulty(f64),
    /// `client.reconnect [host, port, wait_seconds]`, each optional.
    Reconnect {
        host: Option<String>,
        port: Option<u16>,
        wait_secs: Option<u64>,
    },
    /// `client.show_message [text]`.
    ShowMessage(String),
    /// `client.get_version []`.
    GetVersion,
    /// Any other method, kept as it came.
    Unknown {
        name: String,
        params: Value,
    },
}

/// `mining.configure`'s params, as far as version rolling goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Configure {
    pub extensions: Vec<String>,
    pub version_rolling_mask: Option<u32>,
    pub version_rolling_min_bit_count: Option<u32>,
}

/// `mining.notify`: a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub job_id: String,
    /// The previous block's hash in header (wire) order, already word-swapped back.
    pub prev_blockhash: Hash256,
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub merkle_branch: Vec<Hash256>,
    pub version: u32,
    pub nbits: CompactTarget,
    pub ntime: u32,
    pub clean_jobs: bool,
}

/// `mining.submit [worker, job_id, extranonce2, ntime, nonce, version_bits?]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Submit {
    pub worker: String,
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    /// The rolled version bits (BIP 310), when version rolling is in force.
    pub version_bits: Option<u32>,
}

/// The result of `mining.subscribe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeResult {
    /// `(method, subscription id)` pairs.
    pub subscriptions: Vec<(String, String)>,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
}

/// The version-rolling part of `mining.configure`'s result: the pool's mask, or `None` when
/// the pool refused or did not understand version rolling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigureResult {
    pub version_rolling_mask: Option<u32>,
}

impl Method {
    /// The method name as written on the wire.
    pub fn name(&self) -> &str {
        match self {
            Method::Configure(_) => "mining.configure",
            Method::Subscribe { .. } => "mining.subscribe",
            Method::Authorize { .. } => "mining.authorize",
            Method::ExtranonceSubscribe => "mining.extranonce.subscribe",
            Method::SetDifficulty(_) => "mining.set_difficulty",
            Method::SetExtranonce { .. } => "mining.set_extranonce",
            Method::SetVersionMask(_) => "mining.set_version_mask",
            Method::Notify(_) => "mining.notify",
            Method::Submit(_) => "mining.submit",
            Method::SuggestDifficulty(_) => "mining.suggest_difficulty",
            Method::Reconnect { .. } => "client.reconnect",
            Method::ShowMessage(_) => "client.show_message",
            Method::GetVersion => "client.get_version",
            Method::Unknown { name, .. } => name,
        }
    }

    /// Reads a method from its name and params (`params` null or missing reads as `[]`).
    pub fn from_parts(name: &str, params: &Value) -> Result<Method, StratumError> {
        let p = Params::new(name, params);
        Ok(match name {
            "mining.configure" => Method::Configure(Configure::from_params(&p)?),
            "mining.subscribe" => Method::Subscribe { user_agent: p.opt_text(0)?, session_id: p.opt_text(1)? },
            "mining.authorize" => {
                Method::Authorize { user: p.text(0, "user")?, password: p.opt_text(1)?.map(Password) }
            }
            "mining.extranonce.subscribe" => Method::ExtranonceSubscribe,
            "mining.set_difficulty" => Method::SetDifficulty(p.difficulty(0)?),
            "mining.suggest_difficulty" => Method::SuggestDifficulty(p.difficulty(0)?),
            "mining.set_extranonce" => Method::SetExtranonce {
                extranonce1: p.hex(0, "extranonce1", MAX_EXTRANONCE)?,
                extranonce2_size: p.extranonce2_size(1)?,
            },
            "mining.set_version_mask" => Method::SetVersionMask(p.hex_u32(0, "mask")?),
            "mining.notify" => Method::Notify(Notify::from_params(&p)?),
            "mining.submit" => Method::Submit(Submit::from_params(&p)?),
            "client.reconnect" => Method::Reconnect {
                host: p.opt_text(0)?.filter(|h| !h.is_empty()),
                port: p.opt_port(1)?,
                wait_secs: p.opt_u64(2),
            },
            "client.show_message" => Method::ShowMessage(p.opt_text(0)?.unwrap_or_default()),
            "client.get_version" => Method::GetVersion,
            _ => {
                if name.len() > MAX_TEXT {
                    return Err(p.bad("method", "too long"));
                }
                Method::Unknown { name: name.to_owned(), params: params.clone() }
            }
        })
    }

    /// The params as written on the wire.
    pub fn params(&self) -> Value {
        match self {
            Method::Configure(c) => c.to_params(),
            Method::Subscribe { user_agent, session_id } => match (user_agent, session_id) {
                (None, None) => json!([]),
                (agent, None) => json!([agent]),
                (agent, Some(id)) => json!([agent, id]),
            },
            Method::Authorize { user, password: Some(password) } => json!([user, password.0]),
            Method::Authorize { user, password: None } => json!([user]),
            Method::ExtranonceSubscribe | Method::GetVersion => json!([]),
            Method::SetDifficulty(d) | Method::SuggestDifficulty(d) => json!([difficulty_value(*d)]),
            Method::SetExtranonce { extranonce1, extranonce2_size } => {
                json!([hex::encode(extranonce1), extranonce2_size])
            }
            Method::SetVersionMask(mask) => json!([format!("{mask:08x}")]),
            Method::Notify(n) => n.to_params(),
            Method::Submit(s) => s.to_params(),
            // No params at all: reconnect to the same host and port (a `""` host confuses some miners).
            Method::Reconnect { host: None, port: None, wait_secs: None } => json!([]),
            Method::Reconnect { host, port, wait_secs } => {
                let mut v = vec![json!(host.as_deref().unwrap_or(""))];
                if port.is_some() || wait_secs.is_some() {
                    v.push(port.map_or(Value::Null, |p| json!(p)));
                }
                if let Some(w) = wait_secs {
                    v.push(json!(w));
                }
                Value::Array(v)
            }
            Method::ShowMessage(text) => json!([text]),
            Method::Unknown { params, .. } => params.clone(),
        }
    }
}

/// A difficulty written as an integer when it is one (as pools write `1`), else as a float.
fn difficulty_value(d: f64) -> Value {
    if d.fract() == 0.0 && d > 0.0 && d < 9.0e15 { json!(d as u64) } else { json!(d) }
}

impl Configure {
    /// The offer this side makes: version rolling with `mask`.
    pub fn version_rolling(mask: u32) -> Self {
        Configure {
            extensions: vec!["version-rolling".into()],
            version_rolling_mask: Some(mask),
            version_rolling_min_bit_count: Some(2),
        }
    }

    fn from_params(p: &Params) -> Result<Self, StratumError> {
        let extensions = match p.get(0) {
            Some(Value::Array(a)) => {
                if a.len() > 64 {
                    return Err(p.bad("extensions", "too many"));
                }
                a.iter().filter_map(Value::as_str).filter(|s| s.len() <= MAX_TEXT).map(str::to_owned).collect()
            }
            _ => Vec::new(),
        };
        let (mut mask, mut min_bits) = (None, None);
        if let Some(Value::Object(o)) = p.get(1) {
            if let Some(Value::String(m)) = o.get("version-rolling.mask") {
                mask = Some(parse_hex_u32(m).ok_or_else(|| p.bad("version-rolling.mask", "not 1 to 8 hex digits"))?);
            }
            min_bits = o.get("version-rolling.min-bit-count").and_then(Value::as_u64).map(|n| n.min(32) as u32);
        }
        Ok(Configure { extensions, version_rolling_mask: mask, version_rolling_min_bit_count: min_bits })
    }

    fn to_params(&self) -> Value {
        let mut o = Map::new();
        if let Some(mask) = self.version_rolling_mask {
            o.insert("version-rolling.mask".into(), json!(format!("{mask:08x}")));
        }
        if let Some(n) = self.version_rolling_min_bit_count {
            o.insert("version-rolling.min-bit-count".into(), json!(n));
        }
        json!([self.extensions, o])
    }
}

impl ConfigureResult {
    /// Reads `{"version-rolling": true, "version-rolling.mask": "1fffe000"}`; anything else
    /// (false, a missing or malformed mask, not an object) is no version rolling.
    pub fn from_result(result: &Value) -> Self {
        let mask = match result {
            Value::Object(o) if o.get("version-rolling") == Some(&Value::Bool(true)) => {
                o.get("version-rolling.mask").and_then(Value::as_str).and_then(parse_hex_u32)
            }
            _ => None,
        };
        ConfigureResult { version_rolling_mask: mask }
    }

    pub fn to_result(&self) -> Value {
        match self.version_rolling_mask {
            Some(mask) => json!({"version-rolling": true, "version-rolling.mask": format!("{mask:08x}")}),
            None => json!({"version-rolling": false}),
        }
    }
}

impl SubscribeResult {
    /// Reads `[[[method, id], ...], extranonce1, extranonce2_size]`; a single flat
    /// `[method, id]` pair is accepted too.
    pub fn from_result(result: &Value) -> Result<Self, StratumError> {
        let p = Params::new("mining.subscribe result", result);
        let subscriptions = match p.get(0) {
            Some(Value::Array(a)) if a.first().is_some_and(Value::is_string) => pair(a).into_iter().collect(),
            Some(Value::Array(a)) => a.iter().take(16).filter_map(|v| v.as_array().and_then(|x| pair(x))).collect(),
            _ => Vec::new(),
        };
        Ok(SubscribeResult {
            subscriptions,
            extranonce1: p.hex(1, "extranonce1", MAX_EXTRANONCE)?,
            extranonce2_size: p.extranonce2_size(2)?,
        })
    }

    pub fn to_result(&self) -> Value {
        let subs: Vec<Value> = self.subscriptions.iter().map(|(m, id)| json!([m, id])).collect();
        json!([subs, hex::encode(&self.extranonce1), self.extranonce2_size])
    }

    /// The id to resume this session with on reconnect: the `mining.notify` subscription's id,
    /// or else extranonce1 in hex.
    pub fn session_id(&self) -> String {
        self.subscriptions
            .iter()
            .find(|(m, _)| m == "mining.notify")
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| hex::encode(&self.extranonce1))
    }
}

fn pair(a: &[Value]) -> Option<(String, String)> {
    match (a.first(), a.get(1)) {
        (Some(Value::String(m)), Some(Value::String(id))) if m.len() <= MAX_TEXT && id.len() <= MAX_TEXT => {
            Some((m.clone(), id.clone()))
        }
        _ => None,
    }
}

impl Notify {
    fn from_params(p: &Params) -> Result<Self, StratumError> {
        let branch = match p.get(4) {
            Some(Value::Array(a)) => a,
            _ => return Err(p.bad("merkle_branch", "not an array")),
        };
        if branch.len() > MAX_BRANCH {
            return Err(StratumError::BranchTooLong { count: branch.len(), max: MAX_BRANCH });
        }
        let merkle_branch = branch
            .iter()
            .map(|v| {
                let s = v.as_str().ok_or_else(|| p.bad("merkle_branch", "entry not a string"))?;
                let bytes: [u8; 32] =
                    decode_fixed(s).ok_or_else(|| p.bad("merkle_branch", "entry not 32 bytes hex"))?;
                Ok(Hash256(bytes))
            })
            .collect::<Result<Vec<_>, StratumError>>()?;
        let coinb1 = p.str(2, "coinb1")?;
        let coinb2 = p.str(3, "coinb2")?;
        let coinbase_len = (coinb1.len() + coinb2.len()) / 2;
        if coinbase_len > MAX_COINBASE {
            return Err(StratumError::CoinbaseTooLarge { len: coinbase_len, max: MAX_COINBASE });
        }
        let prev: [u8; 32] =
            decode_fixed(p.str(1, "prevhash")?).ok_or_else(|| p.bad("prevhash", "not 32 bytes hex"))?;
        Ok(Notify {
            job_id: p.text(0, "job_id")?,
            prev_blockhash: Hash256(swap_words(prev)),
            coinb1: p.hex(2, "coinb1", MAX_COINBASE)?,
            coinb2: p.hex(3, "coinb2", MAX_COINBASE)?,
            merkle_branch,
            version: p.hex_u32(5, "version")?,
            nbits: CompactTarget(p.hex_u32(6, "nbits")?),
            ntime: p.hex_u32(7, "ntime")?,
            clean_jobs: p.flag(8),
        })
    }

    fn to_params(&self) -> Value {
        let branch: Vec<String> = self.merkle_branch.iter().map(|h| hex::encode(h.0)).collect();
        json!([
            self.job_id,
            hex::encode(swap_words(self.prev_blockhash.0)),
            hex::encode(&self.coinb1),
            hex::encode(&self.coinb2),
            branch,
            format!("{:08x}", self.version),
            format!("{:08x}", self.nbits.0),
            format!("{:08x}", self.ntime),
            self.clean_jobs,
        ])
    }
}

impl Submit {
    fn from_params(p: &Params) -> Result<Self, StratumError> {
        Ok(Submit {
            worker: p.text(0, "worker")?,
            job_id: p.text(1, "job_id")?,
            extranonce2: p.hex(2, "extranonce2", MAX_EXTRANONCE)?,
            ntime: p.hex_u32(3, "ntime")?,
            nonce: p.hex_u32(4, "nonce")?,
            version_bits: match p.get(5) {
                None | Some(Value::Null) => None,
                Some(_) => Some(p.hex_u32(5, "version_bits")?),
            },
        })
    }

    fn to_params(&self) -> Value {
        let mut v = vec![
            json!(self.worker),
            json!(self.job_id),
            json!(hex::encode(&self.extranonce2)),
            json!(format!("{:08x}", self.ntime)),
            json!(format!("{:08x}", self.nonce)),
        ];
        if let Some(bits) = self.version_bits {
            v.push(json!(format!("{bits:08x}")));
        }
        Value::Array(v)
    }
}

/// Reverses the byte order within each 4-byte word: the `prevhash` of `mining.notify` ↔ the
/// header's previous-block hash (the swap is its own inverse).
pub fn swap_words(mut bytes: [u8; 32]) -> [u8; 32] {
    for word in bytes.chunks_exact_mut(4) {
        word.reverse();
    }
    bytes
}

/// 1 to 8 hex digits (either case, optional `0x`) as a big-endian `u32`.
fn parse_hex_u32(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

fn decode_fixed<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Positional params of one method, with the checks every field goes through.
struct Params<'a> {
    method: &'a str,
    items: &'a [Value],
}

impl<'a> Params<'a> {
    fn new(method: &'a str, params: &'a Value) -> Self {
        Params { method, items: params.as_array().map_or(&[], Vec::as_slice) }
    }

    fn get(&self, i: usize) -> Option<&'a Value> {
        self.items.get(i)
    }

    fn bad(&self, field: &'static str, reason: &str) -> StratumError {
        StratumError::Param { method: truncate(self.method), field, reason: reason.to_owned() }
    }

    fn str(&self, i: usize, field: &'static str) -> Result<&'a str, StratumError> {
        self.get(i).and_then(Value::as_str).ok_or_else(|| self.bad(field, "missing or not a string"))
    }

    fn text(&self, i: usize, field: &'static str) -> Result<String, StratumError> {
        let s = self.str(i, field)?;
        if s.len() > MAX_TEXT {
            return Err(self.bad(field, "too long"));
        }
        Ok(s.to_owned())
    }

    fn opt_text(&self, i: usize) -> Result<Option<String>, StratumError> {
        match self.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(self.bad("text", "too long")),
            Some(_) => Ok(None),
        }
    }

    fn opt_u64(&self, i: usize) -> Option<u64> {
        match self.get(i)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    fn opt_port(&self, i: usize) -> Result<Option<u16>, StratumError> {
        match self.get(i) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(_) => {
                let n = self.opt_u64(i).ok_or_else(|| self.bad("port", "not a number"))?;
                u16::try_from(n).map(Some).map_err(|_| self.bad("port", "out of range"))
            }
        }
    }

    fn hex(&self, i: usize, field: &'static str, max_bytes: usize) -> Result<Vec<u8>, StratumError> {
        let s = self.str(i, field)?;
        if s.len() > 2 * max_bytes {
            return Err(match field {
                "coinb1" | "coinb2" => StratumError::CoinbaseTooLarge { len: s.len() / 2, max: max_bytes },
                _ => StratumError::ExtranonceTooLong { len: s.len() / 2, max: max_bytes },
            });
        }
        hex::decode(s).map_err(|_| self.bad(field, "not hex"))
    }

    fn hex_u32(&self, i: usize, field: &'static str) -> Result<u32, StratumError> {
        parse_hex_u32(self.str(i, field)?).ok_or_else(|| self.bad(field, "not 1 to 8 hex digits"))
    }

    fn extranonce2_size(&self, i: usize) -> Result<usize, StratumError> {
        let n = self.opt_u64(i).ok_or_else(|| self.bad("extranonce2_size", "missing or not a number"))?;
        if n > MAX_EXTRANONCE as u64 {
            return Err(StratumError::ExtranonceTooLong { len: n as usize, max: MAX_EXTRANONCE });
        }
        Ok(n as usize)
    }

    fn difficulty(&self, i: usize) -> Result<f64, StratumError> {
        let d = match self.get(i) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match d {
            Some(d) if d.is_finite() && d > 0.0 => Ok(d),
            _ => Err(self.bad("difficulty", "not a positive finite number")),
        }
    }

    /// A boolean, tolerantly: `true`, `1`, `"true"`; anything else is false.
    fn flag(&self, i: usize) -> bool {
        match self.get(i) {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_u64().is_some_and(|n| n != 0),
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}
