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

/// The decode budget handed to bincode. bincode counts its limit in decoded, in-memory bytes
/// (a one-byte varint may become a 16-byte `u128`), so it gets 16 times the wire cap: every
/// frame within `MAX_FRAME` decodes, and a frame still cannot make the decoder allocate more
/// than 16 MiB.
const DECODE_BUDGET: usize = 16 * MAX_FRAME;

type Config<const LIMIT: usize> =
    bincode::config::Configuration<bincode::config::BigEndian, bincode::config::Varint, bincode::config::Limit<LIMIT>>;

const ENCODE: Config<MAX_FRAME> = bincode::config::standard().with_big_endian().with_limit::<MAX_FRAME>();
const DECODE: Config<DECODE_BUDGET> = bincode::config::standard().with_big_endian().with_limit::<DECODE_BUDGET>();

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
    bincode::serde::encode_into_std_write(msg, &mut frame, ENCODE)?;
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
    let (msg, used) = bincode::serde::decode_from_slice(payload, DECODE)?;
    if used != payload.len() {
        return Err(CodecError::Trailing(payload.len() - used));
    }
    Ok(msg)
}

/// Accumulates received bytes and yields whole frames: the one frame reader, under
/// `net::FrameReader` on QUIC streams and the fuzz target.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the bytes not yet decoded start in `buf`. Decoded frames are dropped when more
    /// bytes arrive, all at once, so a chunk of many small frames costs one move, not one each.
    start: usize,
    /// The largest frame accepted: `MAX_FRAME`, or less while a peer is unauthenticated.
    max_frame: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder { buf: Vec::new(), start: 0, max_frame: MAX_FRAME }
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts frames of at most `max_frame` bytes from now on (never above `MAX_FRAME`): a
    /// smaller cap for what an unauthenticated peer may send first.
    pub fn set_max_frame(&mut self, max_frame: usize) {
        self.max_frame = max_frame.min(MAX_FRAME);
    }

    /// Appends received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, `Ok(None)` if more bytes are needed. The length prefix is
    /// checked against the cap as soon as its 4 bytes are here, before the payload is waited
    /// for. After an error the connection must be closed: the stream is no longer in sync.
    #[allow(clippy::should_implement_trait)] // generic over the message type, unlike Iterator::next
    pub fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        let pending = &self.buf[self.start..];
        let Some(prefix) = pending.first_chunk::<PREFIX>() else { return Ok(None) };
        let len = frame_len(*prefix)?;
        if len > self.max_frame {
            return Err(CodecError::TooLarge(len));
        }
        let Some(payload) = pending.get(PREFIX..PREFIX + len) else { return Ok(None) };
        let msg = decode(payload);
        self.start += PREFIX + len;
        msg.map(Some)
    }

    /// Whether no bytes of an unfinished frame are held: a stream that ends now ends between
    /// frames (cleanly), otherwise inside one (a malformed frame).
    pub fn is_empty(&self) -> bool {
        self.start == self.buf.len()
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
            rolled: 0x6000,
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
    fn a_chunk_of_many_frames_yields_them_all_and_the_decoder_knows_where_it_stands() {
        let mut bytes: Vec<u8> = (0..1000).flat_map(|_| encode(&share()).unwrap()).collect();
        let whole = bytes.len();
        bytes.extend(&encode(&share()).unwrap()[..7]);
        let mut dec = FrameDecoder::new();
        assert!(dec.is_empty());
        dec.extend(&bytes[..whole]);
        assert!(!dec.is_empty());
        for _ in 0..1000 {
            assert_eq!(dec.next::<NodeMessage>().unwrap(), Some(share()));
        }
        assert_eq!(dec.next::<NodeMessage>().unwrap(), None);
        assert!(dec.is_empty(), "between frames");
        dec.extend(&bytes[whole..]);
        assert_eq!(dec.next::<NodeMessage>().unwrap(), None);
        assert!(!dec.is_empty(), "inside a frame: a stream ending here is truncated");
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

    // ---- Encoding rules as docs/protocol.md states them ----

    fn payload<T: Serialize>(msg: &T) -> String {
        let frame = encode(msg).unwrap();
        assert_eq!(frame_len(frame[..PREFIX].try_into().unwrap()).unwrap(), frame.len() - PREFIX);
        hex::encode(&frame[PREFIX..])
    }

    /// The worked example of docs/protocol.md: one `Share` frame, byte for byte.
    #[test]
    fn share_frame_matches_protocol_doc() {
        let msg = NodeMessage::Share(Share {
            id: 1000,
            assignment: 3,
            job: 9,
            version: 0x2000_4000,
            time: 1_700_000_000,
            nonce: 0x8bad_f00d,
        });
        let frame = encode(&msg).unwrap();
        #[rustfmt::skip]
        let expected: [u8; 25] = [
            0x00, 0x00, 0x00, 0x15,       // length prefix: 21 payload bytes, big-endian u32
            0x00,                         // NodeMessage variant 0 = Share
            0xfb, 0x03, 0xe8,             // id 1000: 0xfb marker + u16 big-endian
            0x03,                         // assignment 3: one byte
            0x09,                         // job 9: one byte
            0xfc, 0x20, 0x00, 0x40, 0x00, // version 0x20004000: 0xfc marker + u32 big-endian
            0xfc, 0x65, 0x53, 0xf1, 0x00, // time 1700000000
            0xfc, 0x8b, 0xad, 0xf0, 0x0d, // nonce 0x8badf00d
        ];
        assert_eq!(frame, expected);
        let mut dec = FrameDecoder::new();
        dec.extend(&expected);
        assert_eq!(dec.next::<NodeMessage>().unwrap(), Some(msg));
    }

    #[test]
    fn unsigned_integers_are_varints() {
        let cases: [(u64, &str); 10] = [
            (0, "00"),
            (250, "fa"),
            (251, "fb00fb"),
            (256, "fb0100"),
            (0xffff, "fbffff"),
            (0x1_0000, "fc00010000"),
            (0xffff_ffff, "fcffffffff"),
            (0x1_0000_0000, "fd0000000100000000"),
            (u64::MAX, "fdffffffffffffffff"),
            (1000, "fb03e8"),
        ];
        for (v, hex) in cases {
            assert_eq!(payload(&v), hex, "{v}");
        }
        // u16 and u32 use the same scheme; u8 is always one raw byte.
        assert_eq!(payload(&300u16), "fb012c");
        assert_eq!(payload(&7u32), "07");
        assert_eq!(payload(&251u8), "fb");
        // u128: 0xfe marker + 16 big-endian bytes above u64::MAX.
        assert_eq!(payload(&(1u128 << 64)), "fe00000000000000010000000000000000");
        assert_eq!(payload(&u128::from(u64::MAX)), "fdffffffffffffffff");
        assert_eq!(payload(&5u128), "05");
    }

    #[test]
    fn signed_integers_are_zigzag_varints() {
        let cases: [(i64, &str); 8] = [
            (0, "00"),
            (-1, "01"),
            (1, "02"),
            (-2, "03"),
            (125, "fa"),
            (-126, "fb00fb"),
            (i64::MAX, "fdfffffffffffffffe"),
            (i64::MIN, "fdffffffffffffffff"),
        ];
        for (v, hex) in cases {
            assert_eq!(payload(&v), hex, "{v}");
        }
    }

    #[test]
    fn varint_decoding_rules() {
        // A longer form than needed is accepted (encoders always write the shortest)...
        assert_eq!(decode::<u64>(&[0xfb, 0x00, 0x05]).unwrap(), 5);
        assert_eq!(decode::<u32>(&[0xfc, 0, 0, 0, 5]).unwrap(), 5);
        // ...but a marker wider than the field is refused, and 0xff is reserved.
        assert!(matches!(decode::<u16>(&[0xfc, 0, 1, 0x11, 0x70]), Err(CodecError::Malformed(_))));
        assert!(matches!(decode::<u32>(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 5]), Err(CodecError::Malformed(_))));
        assert!(matches!(decode::<u64>(&[0xff]), Err(CodecError::Malformed(_))));
        // Enum variant indices are u32 varints too.
        assert_eq!(decode::<Policy>(&[0xfb, 0x00, 0x01]).unwrap(), Policy::Proportional);
        assert!(decode::<Policy>(&[0x02]).is_err());
    }

    #[test]
    fn other_types_encode_as_documented() {
        assert_eq!(payload(&true), "01");
        assert_eq!(payload(&false), "00");
        assert!(matches!(decode::<bool>(&[2]), Err(CodecError::Malformed(_))));
        // f64: the IEEE 754 bits, big-endian.
        assert_eq!(payload(&1.5f64), "3ff8000000000000");
        // Strings: varint byte length, then UTF-8 (validated on decode).
        assert_eq!(payload(&"héllo"), "0668c3a96c6c6f");
        assert!(matches!(decode::<String>(&[1, 0xff]), Err(CodecError::Malformed(_))));
        // Option: tag byte 0 or 1.
        assert_eq!(payload(&None::<u64>), "00");
        assert_eq!(payload(&Some(300u64)), "01fb012c");
        assert!(decode::<Option<u64>>(&[2]).is_err());
        // Vec: varint element count, then the elements.
        assert_eq!(payload(&vec![1u32, 300]), "0201fb012c");
        // Fixed arrays and tuples: the elements only, no length.
        assert_eq!(payload(&[0xabu8; 4]), "abababab");
        // Enums: the variant index, then the variant's fields in declaration order.
        assert_eq!(payload(&Policy::Proportional), "01");
        assert_eq!(payload(&ShareOutcome::Rejected(RejectReason::Duplicate)), "0105");
        assert_eq!(payload(&ShareOutcome::Rejected(RejectReason::RangeNotHeld)), "0106");
        assert_eq!(payload(&ShareOutcome::Accepted { work: 1 << 32 }), "00fd0000000100000000");
        assert_eq!(payload(&Hello::Admin { token: "t".into() }), "010174");
        assert_eq!(payload(&CoordinatorMessage::Welcome { node: 1, heartbeat_ms: 1000 }), "0001fb03e8");
        assert_eq!(payload(&AdminRequest::AccountList), "01");
        assert_eq!(
            payload(&AdminRequest::AccountAdd {
                name: "a".into(),
                standard: 1,
                period_secs: None,
                order: Some(-1),
                chain: None
            }),
            "0001610100010100"
        );
    }

    #[test]
    fn header_target_and_hash_encoding() {
        // A header is its six fields, not its 80 wire bytes: varint u32s and two raw 32-byte
        // hashes in hash (internal) byte order.
        let mut wire = [0u8; 80];
        wire[0..4].copy_from_slice(&0x2000_0000u32.to_le_bytes());
        wire[4] = 0xaa; // prev_blockhash[0]
        wire[36] = 0xbb; // merkle_root[0]
        wire[68..72].copy_from_slice(&200u32.to_le_bytes());
        wire[72..76].copy_from_slice(&0x1d00_ffffu32.to_le_bytes());
        wire[76..80].copy_from_slice(&0x1_0000u32.to_le_bytes());
        let header = Header::from_bytes(&wire);
        let expected = format!(
            "fc20000000{}{}c8fc1d00fffffc00010000",
            format_args!("aa{}", "00".repeat(31)),
            format_args!("bb{}", "00".repeat(31)),
        );
        assert_eq!(payload(&header), expected);
        // A target: its 256-bit value as 32 big-endian bytes; zero is refused on decode.
        assert_eq!(payload(&Target::DIFFICULTY_1), format!("00000000ffff{}", "00".repeat(26)));
        assert!(decode::<Target>(&[0; 32]).is_err());
        // A Hash256 (newtype): its 32 bytes as they are.
        let hash = crate::Hash256([0x11; 32]);
        assert_eq!(payload(&hash), "11".repeat(32));
    }

    // ---- Framing ----

    #[test]
    fn truncated_frame_is_incomplete_until_whole() {
        let msg = CoordinatorMessage::Close { reason: "shutting down".into() };
        let frame = encode(&msg).unwrap();
        for cut in 0..frame.len() {
            let mut dec = FrameDecoder::new();
            dec.extend(&frame[..cut]);
            assert!(matches!(dec.next::<CoordinatorMessage>(), Ok(None)), "cut at {cut}");
            // Asking again changes nothing; the rest completes it.
            assert!(matches!(dec.next::<CoordinatorMessage>(), Ok(None)), "cut at {cut}");
            dec.extend(&frame[cut..]);
            assert_eq!(dec.next::<CoordinatorMessage>().unwrap(), Some(msg.clone()), "cut at {cut}");
            assert!(matches!(dec.next::<CoordinatorMessage>(), Ok(None)));
        }
        // A payload that ends early inside the frame is malformed, not incomplete.
        let mut short = frame.clone();
        short.pop();
        short[PREFIX - 1] -= 1;
        let mut dec = FrameDecoder::new();
        dec.extend(&short);
        assert!(matches!(dec.next::<CoordinatorMessage>(), Err(CodecError::Malformed(_))));
    }

    #[test]
    fn a_lowered_cap_refuses_a_prefix_above_it_before_its_payload() {
        let mut dec = FrameDecoder::new();
        dec.set_max_frame(100);
        dec.extend(&101u32.to_be_bytes());
        assert!(matches!(dec.next::<NodeMessage>(), Err(CodecError::TooLarge(101))));
        let mut dec = FrameDecoder::new();
        dec.set_max_frame(usize::MAX);
        dec.extend(&(MAX_FRAME as u32 + 1).to_be_bytes());
        assert!(matches!(dec.next::<NodeMessage>(), Err(CodecError::TooLarge(_))), "never above MAX_FRAME");
    }

    #[test]
    fn prefix_of_max_frame_plus_one_is_refused() {
        let too_large = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(matches!(frame_len(too_large), Err(CodecError::TooLarge(n)) if n == MAX_FRAME + 1));
        let mut dec = FrameDecoder::new();
        dec.extend(&too_large);
        assert!(matches!(dec.next::<NodeMessage>(), Err(CodecError::TooLarge(n)) if n == MAX_FRAME + 1));
        // Exactly the cap is a legal length: the decoder waits for the payload.
        let mut dec = FrameDecoder::new();
        dec.extend(&(MAX_FRAME as u32).to_be_bytes());
        assert!(matches!(dec.next::<NodeMessage>(), Ok(None)));
        assert_eq!(frame_len((MAX_FRAME as u32).to_be_bytes()).unwrap(), MAX_FRAME);
    }

    /// A string that puts the payload at `MAX_FRAME + extra` bytes: AdminResponse::Error is a
    /// variant byte, 0xfc + a u32 length, then the text.
    fn error_response_of_payload(extra: usize) -> AdminResponse {
        AdminResponse::Error("x".repeat(MAX_FRAME - 6 + extra))
    }

    #[test]
    fn encoder_refuses_a_payload_over_the_cap() {
        assert_eq!(encode(&error_response_of_payload(0)).unwrap().len(), PREFIX + MAX_FRAME);
        assert!(matches!(encode(&error_response_of_payload(1)), Err(CodecError::TooLarge(n)) if n == MAX_FRAME + 1));
    }

    #[test]
    fn payloads_up_to_a_sixteenth_of_the_cap_always_decode() {
        // The worst case for bincode's decode budget: every byte a u128 (16 bytes in memory).
        let msg = vec![0u128; MAX_FRAME / 16 - 8]; // - 8: the u64 length counts 8
        let frame = encode(&msg).unwrap();
        assert_eq!(frame.len(), PREFIX + 3 + MAX_FRAME / 16 - 8);
        let mut dec = FrameDecoder::new();
        dec.extend(&frame);
        assert_eq!(dec.next::<Vec<u128>>().unwrap(), Some(msg));
    }

    /// Fails today: the decoder's bincode limit counts the decoded (in-memory) size of every
    /// scalar, not wire bytes, so a frame the encoder accepts at the cap is refused with
    /// `Malformed(LimitExceeded)`. See docs/protocol.md, "Size cap".
    #[test]
    fn payload_of_exactly_max_frame_decodes() {
        let msg = error_response_of_payload(0);
        let mut dec = FrameDecoder::new();
        dec.extend(&encode(&msg).unwrap());
        assert_eq!(dec.next::<AdminResponse>().unwrap(), Some(msg));
    }

    #[test]
    fn a_version_1_heartbeat_decodes_and_converts() {
        // Version 1: variant 2 with the rate alone, no device list.
        let frame = encode(&v1::NodeMessage::Heartbeat { hashrate: 2.0 }).unwrap();
        assert_eq!(hex::encode(&frame[PREFIX..]), "024000000000000000");
        assert!(decode::<NodeMessage>(&frame[PREFIX..]).is_err(), "not a version-2 heartbeat");
        let msg: NodeMessage = decode::<v1::NodeMessage>(&frame[PREFIX..]).unwrap().into();
        assert_eq!(msg, NodeMessage::Heartbeat { hashrate: 2.0, devices: Vec::new() });
        // Shares are the same in both versions.
        let share = Share { id: 1, assignment: 2, job: 3, version: 4, time: 5, nonce: 6 };
        assert_eq!(encode(&v1::NodeMessage::Share(share)).unwrap(), encode(&NodeMessage::Share(share)).unwrap());
        assert_eq!(protocol_version(ALPN), Some(PROTOCOL_VERSION));
        assert_eq!(protocol_version(ALPN_PREVIOUS), Some(1));
        assert_eq!(protocol_version(b"h3"), None);
    }

    #[test]
    fn nan_hashrate_survives_bit_for_bit() {
        let msg = NodeMessage::Heartbeat { hashrate: f64::from_bits(0x7ff8_0000_dead_beef), devices: Vec::new() };
        let frame = encode(&msg).unwrap();
        assert_eq!(hex::encode(&frame[PREFIX..]), "027ff80000deadbeef00");
        let NodeMessage::Heartbeat { hashrate, .. } = decode(&frame[PREFIX..]).unwrap() else {
            panic!("wrong variant")
        };
        assert_eq!(hashrate.to_bits(), 0x7ff8_0000_dead_beef);
    }

    // ---- Every variant round-trips ----

    mod strategies {
        use proptest::prelude::*;
        use ruint::aliases::U256;

        use crate::message::*;
        use crate::{CompactTarget, Hash256, Header, Target};

        /// Integers spread over every varint width, not just the (mostly 9-byte) large ones.
        pub fn int() -> impl Strategy<Value = u64> {
            prop_oneof![0..251u64, 251..=0xffffu64, 0x1_0000..=0xffff_ffffu64, any::<u64>()]
        }

        pub fn int32() -> impl Strategy<Value = u32> {
            prop_oneof![0..251u32, 251..=0xffffu32, any::<u32>()]
        }

        pub fn int128() -> impl Strategy<Value = u128> {
            prop_oneof![int().prop_map(u128::from), any::<u128>()]
        }

        pub fn signed() -> impl Strategy<Value = i64> {
            prop_oneof![-200..200i64, any::<i64>()]
        }

        /// Every float but NaN (which is not equal to itself; see `nan_hashrate_survives`).
        pub fn float() -> impl Strategy<Value = f64> {
            use proptest::num::f64::*;
            POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
        }

        pub fn text() -> impl Strategy<Value = String> {
            prop_oneof![".{0,8}", "[a-z0-9-]{0,300}"]
        }

        pub fn hash() -> impl Strategy<Value = Hash256> {
            any::<[u8; 32]>().prop_map(Hash256)
        }

        pub fn header() -> impl Strategy<Value = Header> {
            (int32(), hash(), hash(), int32(), int32(), int32()).prop_map(
                |(version, prev_blockhash, merkle_root, time, bits, nonce)| Header {
                    version,
                    prev_blockhash,
                    merkle_root,
                    time,
                    bits: CompactTarget(bits),
                    nonce,
                },
            )
        }

        pub fn target() -> impl Strategy<Value = Target> {
            prop_oneof![
                any::<[u8; 32]>().prop_filter_map("zero target", |b| Target::new(U256::from_be_bytes(b)).ok()),
                Just(Target::MAX),
                Just(Target::DIFFICULTY_1),
            ]
        }

        pub fn policy() -> impl Strategy<Value = Policy> {
            prop_oneof![Just(Policy::Sequential), Just(Policy::Proportional)]
        }

        pub fn device() -> impl Strategy<Value = DeviceInfo> {
            (text(), text(), float()).prop_map(|(kind, name, hashrate)| DeviceInfo { kind, name, hashrate })
        }

        pub fn hello() -> impl Strategy<Value = Hello> {
            let device = device();
            let node = (text(), text(), text(), any::<bool>(), prop::collection::vec(device, 0..4), float()).prop_map(
                |(token, name, software_version, standby, devices, hashrate)| {
                    Hello::Node(NodeHello { token, name, software_version, standby, devices, hashrate })
                },
            );
            prop_oneof![node, text().prop_map(|token| Hello::Admin { token })]
        }

        pub fn share() -> impl Strategy<Value = Share> {
            (int(), int(), int(), int32(), int32(), int32()).prop_map(|(id, assignment, job, version, time, nonce)| {
                Share { id, assignment, job, version, time, nonce }
            })
        }

        pub fn node_message() -> impl Strategy<Value = NodeMessage> {
            prop_oneof![
                share().prop_map(NodeMessage::Share),
                (int(), int()).prop_map(|(assignment, hashes)| NodeMessage::RangeDone { assignment, hashes }),
                (float(), prop::collection::vec(device(), 0..3))
                    .prop_map(|(hashrate, devices)| NodeMessage::Heartbeat { hashrate, devices }),
            ]
        }

        pub fn outcome() -> impl Strategy<Value = ShareOutcome> {
            prop_oneof![
                int128().prop_map(|work| ShareOutcome::Accepted { work }),
                prop::sample::select(RejectReason::ALL.to_vec()).prop_map(ShareOutcome::Rejected),
            ]
        }

        pub fn coordinator_message() -> impl Strategy<Value = CoordinatorMessage> {
            let assignment = (int(), int(), header(), target(), int32(), int(), int32()).prop_map(
                |(id, job, header, share_target, start, count, rolled)| Assignment {
                    id,
                    job,
                    header,
                    share_target,
                    start,
                    count,
                    rolled,
                },
            );
            prop_oneof![
                (int(), int32()).prop_map(|(node, heartbeat_ms)| CoordinatorMessage::Welcome { node, heartbeat_ms }),
                assignment.prop_map(CoordinatorMessage::Assign),
                int().prop_map(|assignment| CoordinatorMessage::Revoke { assignment }),
                (int(), outcome()).prop_map(|(id, outcome)| CoordinatorMessage::ShareResult { id, outcome }),
                text().prop_map(|reason| CoordinatorMessage::Close { reason }),
            ]
        }

        pub fn admin_request() -> impl Strategy<Value = AdminRequest> {
            prop_oneof![
                (text(), int128(), prop::option::of(int()), prop::option::of(signed())).prop_map(
                    |(name, standard, period_secs, order)| AdminRequest::AccountAdd {
                        name,
                        standard,
                        period_secs,
                        order,
                        chain: None,
                    }
                ),
                page().prop_map(|page| AdminRequest::NodeList { page }),
                text().prop_map(|name| AdminRequest::NodeDrain { name }),
                text().prop_map(|name| AdminRequest::NodePromote { name }),
                text().prop_map(|name| AdminRequest::NodeStandby { name }),
                chain_params().prop_map(AdminRequest::ChainAdd),
                (prop::option::of(text()), page())
                    .prop_map(|(account, page)| AdminRequest::LedgerShow { account, page }),
                Just(AdminRequest::LedgerVerify),
                (text(), page(), prop::option::of(cut())).prop_map(|(name, page, cut)| AdminRequest::AccountReceipt {
                    name,
                    page,
                    cut
                }),
                Just(AdminRequest::RolloutSet(None)),
                (text(), any::<u8>())
                    .prop_map(|(version, percent)| AdminRequest::RolloutSet(Some(Rollout { version, percent }))),
                Just(AdminRequest::AccountList),
                Just(AdminRequest::Status),
                (text(), header(), target()).prop_map(|(account, header, target)| AdminRequest::JobSubmit {
                    account,
                    header,
                    target
                }),
                (int(), page()).prop_map(|(job, page)| AdminRequest::JobShow { job, page }),
                policy().prop_map(AdminRequest::PolicySet),
            ]
        }

        fn page() -> impl Strategy<Value = PageRequest> {
            (int(), int32()).prop_map(|(after, limit)| PageRequest { after, limit })
        }

        fn cut() -> impl Strategy<Value = ReceiptCut> {
            (int(), int()).prop_map(|(period_start_ms, last_share)| ReceiptCut { period_start_ms, last_share })
        }

        fn account() -> impl Strategy<Value = AccountStatus> {
            (text(), signed(), int128(), int128(), prop::option::of(int()), any::<bool>(), int()).prop_map(
                |(name, order, standard, delivered, period_secs, up_to_standard, shares)| AccountStatus {
                    chain: format!("{name}-chain"),
                    name,
                    order,
                    standard,
                    delivered,
                    period_secs,
                    up_to_standard,
                    shares,
                },
            )
        }

        fn node_status() -> impl Strategy<Value = NodeStatus> {
            (
                (text(), text(), float(), float(), prop::option::of(text()), text()),
                (
                    prop::option::of(text()),
                    any::<bool>(),
                    prop::collection::vec(device(), 0..3),
                    int(),
                    int(),
                    any::<u16>(),
                ),
            )
                .prop_map(
                    |(
                        (name, state, hashrate, announced_hashrate, account, software_version),
                        (chain, draining, devices, accepted, rejected, protocol),
                    )| NodeStatus {
                        name,
                        state,
                        hashrate,
                        announced_hashrate,
                        account,
                        software_version,
                        chain,
                        draining,
                        devices,
                        accepted,
                        rejected,
                        protocol,
                    },
                )
        }

        fn chain_params() -> impl Strategy<Value = ChainParams> {
            (text(), int32(), int(), float(), float()).prop_map(
                |(name, tx_per_template, bit_rate, difficulty, weight)| ChainParams {
                    name,
                    tx_per_template,
                    bit_rate,
                    difficulty,
                    weight,
                },
            )
        }

        fn ledger_entry() -> impl Strategy<Value = LedgerEntry> {
            (int(), int(), text(), text(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
                |(seq, at_ms, kind, payload, prev_hash, hash)| LedgerEntry {
                    seq,
                    at_ms,
                    kind,
                    payload,
                    prev_hash,
                    hash,
                },
            )
        }

        fn receipt() -> impl Strategy<Value = Receipt> {
            let share =
                (header(), target(), int128(), text(), int()).prop_map(|(header, share_target, work, node, at_ms)| {
                    ReceiptShare { header, share_target, work, node, at_ms, upstream: None }
                });
            (text(), int128(), int128(), cut(), prop::collection::vec(share, 0..3), prop::option::of(int())).prop_map(
                |(account, standard, delivered, cut, shares, next)| Receipt {
                    account,
                    standard,
                    delivered,
                    period_start_ms: cut.period_start_ms,
                    cut,
                    shares,
                    next,
                },
            )
        }

        fn job_status() -> impl Strategy<Value = JobStatus> {
            let hit = (int32(), int32(), int32(), hash()).prop_map(|(version, time, nonce, hash)| JobHit {
                version,
                time,
                nonce,
                hash,
            });
            let run = (int32(), int32(), int(), text()).prop_map(|(version, start, count, fate)| RangeRun {
                version,
                start,
                count,
                fate,
            });
            let counts = (int(), int(), int(), int(), int());
            let lists = (prop::collection::vec(hit, 0..4), prop::collection::vec(run, 0..3));
            ((int(), text(), header(), target()), counts, lists).prop_map(
                |(
                    (job, account, header, target),
                    (searched, in_flight, abandoned, reassigned, total),
                    (hits, runs),
                )| {
                    JobStatus {
                        job,
                        account,
                        header,
                        target,
                        searched,
                        in_flight,
                        abandoned,
                        reassigned,
                        total,
                        hits,
                        runs,
                    }
                },
            )
        }

        pub fn admin_response() -> impl Strategy<Value = AdminResponse> {
            let status = (policy(), prop::collection::vec(account(), 0..4), prop::collection::vec(node_status(), 0..4))
                .prop_map(|(policy, accounts, nodes)| Status {
                    policy,
                    accounts,
                    nodes,
                    rollout: None,
                    pools: Vec::new(),
                });
            prop_oneof![
                Just(AdminResponse::Ok),
                prop::collection::vec(account(), 0..4).prop_map(AdminResponse::Accounts),
                status.prop_map(AdminResponse::Status),
                int().prop_map(|job| AdminResponse::JobSubmitted { job }),
                (job_status(), prop::option::of(int())).prop_map(|(status, next)| AdminResponse::Job { status, next }),
                text().prop_map(AdminResponse::Error),
                (prop::collection::vec(node_status(), 0..3), prop::option::of(int()))
                    .prop_map(|(nodes, next)| AdminResponse::Nodes { nodes, next }),
                (prop::collection::vec(ledger_entry(), 0..3), prop::option::of(int()))
                    .prop_map(|(entries, next)| AdminResponse::Ledger { entries, next }),
                (int(), prop::option::of((int(), text()))).prop_map(|(entries, first_bad)| {
                    AdminResponse::LedgerVerified(LedgerVerdict { entries, first_bad })
                }),
                receipt().prop_map(AdminResponse::Receipt),
            ]
        }
    }

    /// Encodes `msgs` back to back, feeds the stream to a decoder in chunks of `chunk` bytes and
    /// checks the same messages come out, in order, and nothing else.
    fn round_trip_stream<T>(msgs: &[T], chunk: usize) -> Result<(), proptest::test_runner::TestCaseError>
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let mut stream = Vec::new();
        for msg in msgs {
            let frame = encode(msg).unwrap();
            // Each payload alone decodes to the message too.
            proptest::prop_assert_eq!(&decode::<T>(&frame[PREFIX..]).unwrap(), msg);
            stream.extend(frame);
        }
        let mut dec = FrameDecoder::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            dec.extend(piece);
            while let Some(msg) = dec.next::<T>().unwrap() {
                out.push(msg);
            }
        }
        proptest::prop_assert_eq!(&out[..], msgs);
        Ok(())
    }

    proptest::proptest! {
        #[test]
        fn node_messages_round_trip(msgs in proptest::collection::vec(strategies::node_message(), 1..4), chunk in 1usize..64) {
            round_trip_stream(&msgs, chunk)?;
        }

        #[test]
        fn coordinator_messages_round_trip(msgs in proptest::collection::vec(strategies::coordinator_message(), 1..4), chunk in 1usize..64) {
            round_trip_stream(&msgs, chunk)?;
        }

        #[test]
        fn hellos_round_trip(msgs in proptest::collection::vec(strategies::hello(), 1..4), chunk in 1usize..64) {
            round_trip_stream(&msgs, chunk)?;
        }

        #[test]
        fn admin_requests_round_trip(msgs in proptest::collection::vec(strategies::admin_request(), 1..4), chunk in 1usize..64) {
            round_trip_stream(&msgs, chunk)?;
        }

        #[test]
        fn admin_responses_round_trip(msgs in proptest::collection::vec(strategies::admin_response(), 1..4), chunk in 1usize..64) {
            round_trip_stream(&msgs, chunk)?;
        }
    }
}
