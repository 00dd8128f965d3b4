//! The frame codec: every protocol message travels as a 4-byte big-endian length followed by
//! that many bytes of bincode (standard configuration, serde). The length is checked against
//! `MAX_FRAME` before anything is allocated, and the decoder is told the same limit, so a
//! hostile peer cannot make either side allocate more than one frame's cap.
//!
//! `FrameDecoder` is sans-IO: feed it the bytes that arrived, take out whole messages.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest frame payload accepted, in bytes.
pub const MAX_FRAME: usize = 1 << 20;

/// Length-prefix size.
pub const PREFIX: usize = 4;

const CONFIG: bincode::config::Configuration<bincode::config::BigEndian, bincode::config::Varint, bincode::config::Limit<MAX_FRAME>> =
    bincode::config::standard().with_big_endian().with_limit::<MAX_FRAME>();

/// Why a frame could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte cap")]
    TooLarge(usize),
    #[error("malformed frame: {0}")]
    Malformed(#[from] bincode::error::DecodeError),
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
    #[error("cannot encode message: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

/// Encodes `msg` as one frame (prefix included).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, CodecError> {
    let mut frame = vec![0u8; PREFIX];
    bincode::serde::encode_into_std_write(msg, &mut frame, CONFIG)?;
    let len = frame.len() - PREFIX;
    if len > MAX_FRAME {
        return Err(CodecError::TooLarge(len));
    }
    frame[..PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

/// The payload length announced by a prefix, checked against the cap.
pub fn frame_len(prefix: [u8; PREFIX]) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME { Err(CodecError::TooLarge(len)) } else { Ok(len) }
}

/// Decodes one payload (without prefix); the whole payload must be one message.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, CodecError> {
    if payload.len() > MAX_FRAME {
        return Err(CodecError::TooLarge(payload.len()));
    }
    let (msg, used) = bincode::serde::decode_from_slice(payload, CONFIG)?;
    if used != payload.len() {
        return Err(CodecError::Trailing(payload.len() - used));
    }
    Ok(msg)
}

/// Accumulates received bytes and yields whole frames.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed. After an error the
    /// connection must be closed: the stream is no longer in sync.
    pub fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        let Some(prefix) = self.buf.first_chunk::<PREFIX>() else { return Ok(None) };
        let len = frame_len(*prefix)?;
        if self.buf.len() < PREFIX + len {
            return Ok(None);
        }
        let msg = decode(&self.buf[PREFIX..PREFIX + len]);
        self.buf.drain(..PREFIX + len);
        msg.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;
    use crate::{CompactTarget, Header, Target};

    fn share() -> NodeMessage {
        NodeMessage::Share(Share { id: 7, assignment: 3, job: 9, version: 0x2000_0000, time: 1_700_000_000, nonce: 42 })
    }

    #[test]
    fn round_trip_in_pieces() {
        let assign = CoordinatorMessage::Assign(Assignment {
            id: 1,
            job: 2,
            header: Header::from_bytes(&[7; 80]),
            share_target: Target::from_compact(CompactTarget(0x1d00ffff)).unwrap(),
            start: 0,
            count: 1 << 32,
        });
        let mut bytes = encode(&assign).unwrap();
        bytes.extend(encode(&CoordinatorMessage::Close { reason: "bye".into() }).unwrap());
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for b in bytes {
            dec.extend(&[b]);
            while let Some(m) = dec.next::<CoordinatorMessage>().unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, vec![assign, CoordinatorMessage::Close { reason: "bye".into() }]);
    }

    #[test]
    fn oversized_prefix_is_refused_before_allocation() {
        let mut dec = FrameDecoder::new();
        dec.extend(&u32::MAX.to_be_bytes());
        assert!(matches!(dec.next::<NodeMessage>(), Err(CodecError::TooLarge(_))));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut frame = vec![0, 0, 0, 5];
        frame.extend([0xff; 5]);
        let mut dec = FrameDecoder::new();
        dec.extend(&frame);
        assert!(matches!(dec.next::<NodeMessage>(), Err(CodecError::Malformed(_))));
        assert!(decode::<NodeMessage>(&[]).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut frame = encode(&share()).unwrap();
        frame.push(0);
        assert!(matches!(decode::<NodeMessage>(&frame[PREFIX..]), Err(CodecError::Trailing(1))));
    }

    #[test]
    fn zero_target_is_refused() {
        let mut frame = encode(&Target::MAX).unwrap();
        for b in &mut frame[PREFIX..] {
            *b = if *b == 0xff { 0 } else { *b };
        }
        assert!(decode::<Target>(&frame[PREFIX..]).is_err());
    }
}
