//! Fuzzes the hashgrid/1 frame decoder.
//!
//! The first input byte picks how the rest is cut into chunks; the rest is a byte stream as it
//! might arrive on a QUIC stream. For every message type of the protocol the stream is fed to a
//! `FrameDecoder` chunk by chunk and, separately, in one piece, and the raw bytes are also
//! decoded as a bare payload. The properties checked:
//!
//! - nothing panics (a decode error is fine, and ends the stream as it ends the connection);
//! - the chunking does not matter: the chunked and the one-piece runs yield the same messages
//!   and end the same way;
//! - every message that decodes re-encodes to a frame under the cap that decodes to an equal
//!   value (compared by value, and by its encoding, which also covers NaN hash rates, where
//!   `PartialEq` is not reflexive).

#![no_main]

use std::fmt::Debug;

use hashgrid_common::codec::{self, CodecError, FrameDecoder, MAX_FRAME, PREFIX};
use hashgrid_common::message::{AdminRequest, AdminResponse, CoordinatorMessage, Hello, NodeMessage};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What one decoder run produced, in order: each message as its canonical frame, then how the
/// stream ended.
#[derive(Debug, PartialEq)]
enum Event {
    Message(Vec<u8>),
    TooLarge(usize),
    Malformed,
    Trailing(usize),
}

/// Splits `stream` into chunks whose sizes come from `seed`: one byte at a time, small odd
/// sizes, or large ones, so that prefixes and payloads are cut at every possible place.
fn chunks(seed: u8, stream: &[u8]) -> Vec<&[u8]> {
    let max = match seed & 7 {
        0 => 1,
        1 => 2,
        2 => 3,
        3 => 5,
        4 => 8,
        5 => 64,
        6 => 1024,
        _ => usize::MAX,
    };
    let mut state = u32::from(seed).wrapping_mul(0x9e37_79b9) | 1;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = 1 + (state as usize) % max.min(rest.len());
        let (chunk, tail) = rest.split_at(size);
        out.push(chunk);
        rest = tail;
    }
    out
}

/// A decoded message must re-encode into a frame that decodes to the same value. Returns the
/// re-encoded frame.
fn round_trip<T>(msg: &T) -> Vec<u8>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let frame = codec::encode(msg).expect("a decoded message must re-encode");
    let prefix: [u8; PREFIX] = frame[..PREFIX].try_into().unwrap();
    let len = codec::frame_len(prefix).expect("a re-encoded frame must be under the cap");
    assert_eq!(len, frame.len() - PREFIX);
    assert!(len <= MAX_FRAME);
    let back: T = codec::decode(&frame[PREFIX..]).expect("a re-encoded message must decode");
    let again = codec::encode(&back).expect("must re-encode");
    assert_eq!(again, frame, "encoding is not stable across a round trip of {msg:?}");
    #[allow(clippy::eq_op)]
    if msg == msg {
        // Not a NaN somewhere inside: the value itself must survive.
        assert_eq!(&back, msg);
    }
    frame
}

fn run<T>(pieces: &[&[u8]]) -> Vec<Event>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let mut dec = FrameDecoder::new();
    let mut events = Vec::new();
    for piece in pieces {
        dec.extend(piece);
        loop {
            match dec.next::<T>() {
                Ok(Some(msg)) => events.push(Event::Message(round_trip(&msg))),
                Ok(None) => break,
                Err(e) => {
                    events.push(match e {
                        CodecError::TooLarge(n) => {
                            assert!(n > MAX_FRAME, "TooLarge({n}) is under the cap");
                            Event::TooLarge(n)
                        }
                        CodecError::Malformed(_) => Event::Malformed,
                        CodecError::Trailing(n) => {
                            assert!(n > 0);
                            Event::Trailing(n)
                        }
                        CodecError::Encode(e) => panic!("decoder reported an encode error: {e}"),
                    });
                    // The connection would be closed here.
                    return events;
                }
            }
        }
    }
    // Whatever is left is an incomplete frame: asking again must still say "need more".
    assert!(matches!(dec.next::<T>(), Ok(None)));
    events
}

fn check<T>(seed: u8, stream: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let chunked = run::<T>(&chunks(seed, stream));
    let whole = run::<T>(&[stream]);
    assert_eq!(chunked, whole, "the chunking changed the decoded messages");

    // The same bytes as one bare payload, the way a frame's body reaches `decode`.
    if let Ok(msg) = codec::decode::<T>(stream) {
        round_trip(&msg);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    check::<NodeMessage>(seed, stream);
    check::<CoordinatorMessage>(seed, stream);
    check::<Hello>(seed, stream);
    check::<AdminRequest>(seed, stream);
    check::<AdminResponse>(seed, stream);
});
