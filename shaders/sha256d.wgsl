// Optimized SHA-256d nonce search: the kernels `GpuBackend` runs.
//
// Each invocation tests one nonce of a Bitcoin header: it compresses the header's second
// 64-byte block from the midstate, hashes the 32-byte digest again, and reports the nonce if
// the hash, read as a little-endian 256-bit number, is at or below the target. The host
// re-hashes every reported nonce on the CPU; `sha256d_reference.wgsl` is the plain version of
// `search` that the tests compare it with.
//
// Two entry points:
// - `search` tests the nonce under one version (`job.versions[0]`).
// - `search_rolled` tests it under each of `job.limits.z` versions (BIP 320 version rolling).
//   The versions differ only in the header's first 64 bytes, so each has its own midstate but
//   all share the second block: the first hash's message schedule W16..W63 (tail words and
//   nonce) is computed once per nonce, and both compressions run once per version. The
//   schedule is a private array indexed only by constants, which compilers keep in registers:
//   48 words live across the version loop, about 70 registers with the state and temporaries,
//   well under the 255 NVIDIA and AMD allow a thread. The versions are a loop, neither
//   unrolled nor interleaved round by round: the loop body is one version's code, so the
//   instruction footprint stays that of `search` whatever k is.
//
// Both compressions are fully unrolled, with the standard mining precomputations:
// - Rounds 0-2 of the first hash see only header words that every nonce shares, and round 3
//   adds the nonce to two registers: the host runs them once per job and version (`round3`).
// - W4..W15 of the first block are padding, so rounds 4-15 add constants, and the terms of
//   W16..W32 that do not involve the nonce come from the host (`schedule_lo/hi`).
// - W8..W15 of the second block are padding too: folded into constants below.
// - The hash's most significant word is H7 = IV7 + e after round 60, so rounds 61-63 run only
//   when that word equals the target's top word; otherwise it decides on its own.
// What each step is worth on lavapipe is noted in the `search::gpu` module docs.
//
// The bindings and the `Job` layout are shared with `sha256d_reference.wgsl` and filled by
// `node/src/search/gpu/job.rs` (`JobUniform`).

// What differs between the versions of a header.
struct Version {
    // The SHA-256 state after the first 64 header bytes.
    midstate_lo: vec4<u32>,
    midstate_hi: vec4<u32>,
    // The state after round 3 of the second block, less the nonce word (host `round3_state`).
    round3_lo: vec4<u32>,
    round3_hi: vec4<u32>,
}

struct Job {
    // xyz: header bytes 64..76 as big-endian words (W0..W2); w: the dispatch's first nonce.
    tail: vec4<u32>,
    // The target as 32-bit words, least significant first (`Target::to_le_words`).
    target_lo: vec4<u32>,
    target_hi: vec4<u32>,
    // x: nonces in this dispatch; y: hits `results` can hold; z: versions (`search_rolled`);
    // w: zero.
    limits: vec4<u32>,
    // W16, W17, K16 + W16, K17 + W17 / the rest of W18, W19, W31, W32 (host `schedule_terms`).
    schedule_lo: vec4<u32>,
    schedule_hi: vec4<u32>,
    // The header's own version first, then the rolled ones (`SearchJob::versions`).
    versions: array<Version, 16>,
}

// Hits as (nonce, version index) pairs. `count` is incremented once per hit, even past the
// capacity, so the host can tell that hits were dropped and search the dispatch again in
// smaller pieces.
struct Results {
    count: atomic<u32>,
    hits: array<u32>,
}

@group(0) @binding(0) var<uniform> job: Job;
@group(0) @binding(1) var<storage, read_write> results: Results;

// Invocations per workgroup, set by the host when it builds the pipeline.
override WORKGROUP_SIZE: u32 = 256u;

// The SHA-256 working registers.
struct State {
    a: u32,
    b: u32,
    c: u32,
    d: u32,
    e: u32,
    f: u32,
    g: u32,
    h: u32,
}

// The sigma functions of FIPS 180-4, with each rotation spelled out as two shifts.
fn bsig0(x: u32) -> u32 {
    return ((x >> 2u) | (x << 30u)) ^ ((x >> 13u) | (x << 19u)) ^ ((x >> 22u) | (x << 10u));
}

fn bsig1(x: u32) -> u32 {
    return ((x >> 6u) | (x << 26u)) ^ ((x >> 11u) | (x << 21u)) ^ ((x >> 25u) | (x << 7u));
}

fn ssig0(x: u32) -> u32 {
    return ((x >> 7u) | (x << 25u)) ^ ((x >> 18u) | (x << 14u)) ^ (x >> 3u);
}

fn ssig1(x: u32) -> u32 {
    return ((x >> 17u) | (x << 15u)) ^ ((x >> 19u) | (x << 13u)) ^ (x >> 10u);
}

fn byte_swap(x: u32) -> u32 {
    return (x << 24u) | ((x & 0xff00u) << 8u) | ((x >> 8u) & 0xff00u) | (x >> 24u);
}

// One SHA-256 round; `kw` is the round constant plus the message schedule word.
fn round(s: State, kw: u32) -> State {
    let t1 = s.h + bsig1(s.e) + (s.g ^ (s.e & (s.f ^ s.g))) + kw;
    let t2 = bsig0(s.a) + ((s.a & s.b) | (s.c & (s.a | s.b)));
    return State(t1 + t2, s.a, s.b, s.c, s.d + t1, s.e, s.f, s.g);
}

// Whether the final digest (state words H0..H7) meets the target: the hash, read as a
// little-endian number, has word i = byte_swap(Hi); compare from the top word down.
fn meets_target(hash: State) -> bool {
    let t = job.target_hi;
    let u = job.target_lo;
    let h7 = byte_swap(hash.h);
    if h7 != t.w {
        return h7 < t.w;
    }
    let h6 = byte_swap(hash.g);
    if h6 != t.z {
        return h6 < t.z;
    }
    let h5 = byte_swap(hash.f);
    if h5 != t.y {
        return h5 < t.y;
    }
    let h4 = byte_swap(hash.e);
    if h4 != t.x {
        return h4 < t.x;
    }
    let h3 = byte_swap(hash.d);
    if h3 != u.w {
        return h3 < u.w;
    }
    let h2 = byte_swap(hash.c);
    if h2 != u.z {
        return h2 < u.z;
    }
    let h1 = byte_swap(hash.b);
    if h1 != u.y {
        return h1 < u.y;
    }
    return byte_swap(hash.a) <= u.x;
}

// The first hash's message schedule for the byte-swapped nonce `n`: w[i] is Wi for i in
// 16..63 (W0..W15, the tail words, the nonce and padding, are folded into `first_hash`). It is
// the same for every version of the header.
fn first_schedule(n: u32) -> array<u32, 64> {
    var w: array<u32, 64>;
    w[16] = job.schedule_lo.x;
    w[17] = job.schedule_lo.y;
    w[18] = job.schedule_hi.x + ssig0(n);
    w[19] = job.schedule_hi.y + n;
    w[20] = ssig1(w[18]) + 0x80000000u;
    w[21] = ssig1(w[19]);
    w[22] = ssig1(w[20]) + 0x00000280u;
    w[23] = ssig1(w[21]) + w[16];
    w[24] = ssig1(w[22]) + w[17];
    w[25] = ssig1(w[23]) + w[18];
    w[26] = ssig1(w[24]) + w[19];
    w[27] = ssig1(w[25]) + w[20];
    w[28] = ssig1(w[26]) + w[21];
    w[29] = ssig1(w[27]) + w[22];
    w[30] = ssig1(w[28]) + w[23] + 0x00a00055u;
    w[31] = ssig1(w[29]) + w[24] + job.schedule_hi.z;
    w[32] = ssig1(w[30]) + w[25] + job.schedule_hi.w;
    w[33] = ssig1(w[31]) + w[26] + ssig0(w[18]) + w[17];
    w[34] = ssig1(w[32]) + w[27] + ssig0(w[19]) + w[18];
    w[35] = ssig1(w[33]) + w[28] + ssig0(w[20]) + w[19];
    w[36] = ssig1(w[34]) + w[29] + ssig0(w[21]) + w[20];
    w[37] = ssig1(w[35]) + w[30] + ssig0(w[22]) + w[21];
    w[38] = ssig1(w[36]) + w[31] + ssig0(w[23]) + w[22];
    w[39] = ssig1(w[37]) + w[32] + ssig0(w[24]) + w[23];
    w[40] = ssig1(w[38]) + w[33] + ssig0(w[25]) + w[24];
    w[41] = ssig1(w[39]) + w[34] + ssig0(w[26]) + w[25];
    w[42] = ssig1(w[40]) + w[35] + ssig0(w[27]) + w[26];
    w[43] = ssig1(w[41]) + w[36] + ssig0(w[28]) + w[27];
    w[44] = ssig1(w[42]) + w[37] + ssig0(w[29]) + w[28];
    w[45] = ssig1(w[43]) + w[38] + ssig0(w[30]) + w[29];
    w[46] = ssig1(w[44]) + w[39] + ssig0(w[31]) + w[30];
    w[47] = ssig1(w[45]) + w[40] + ssig0(w[32]) + w[31];
    w[48] = ssig1(w[46]) + w[41] + ssig0(w[33]) + w[32];
    w[49] = ssig1(w[47]) + w[42] + ssig0(w[34]) + w[33];
    w[50] = ssig1(w[48]) + w[43] + ssig0(w[35]) + w[34];
    w[51] = ssig1(w[49]) + w[44] + ssig0(w[36]) + w[35];
    w[52] = ssig1(w[50]) + w[45] + ssig0(w[37]) + w[36];
    w[53] = ssig1(w[51]) + w[46] + ssig0(w[38]) + w[37];
    w[54] = ssig1(w[52]) + w[47] + ssig0(w[39]) + w[38];
    w[55] = ssig1(w[53]) + w[48] + ssig0(w[40]) + w[39];
    w[56] = ssig1(w[54]) + w[49] + ssig0(w[41]) + w[40];
    w[57] = ssig1(w[55]) + w[50] + ssig0(w[42]) + w[41];
    w[58] = ssig1(w[56]) + w[51] + ssig0(w[43]) + w[42];
    w[59] = ssig1(w[57]) + w[52] + ssig0(w[44]) + w[43];
    w[60] = ssig1(w[58]) + w[53] + ssig0(w[45]) + w[44];
    w[61] = ssig1(w[59]) + w[54] + ssig0(w[46]) + w[45];
    w[62] = ssig1(w[60]) + w[55] + ssig0(w[47]) + w[46];
    w[63] = ssig1(w[61]) + w[56] + ssig0(w[48]) + w[47];
    return w;
}

// The first hash's digest (state words H0..H7) of the header under `version`, for the
// byte-swapped nonce `n` and its schedule `w`: from the state after round 3 (host
// `round3_state`) plus the nonce, rounds 4-63, and the midstate added back.
fn first_hash(version: Version, n: u32, w: array<u32, 64>) -> State {
    let r_lo = version.round3_lo;
    let r_hi = version.round3_hi;
    var s = State(r_lo.x + n, r_lo.y, r_lo.z, r_lo.w, r_hi.x + n, r_hi.y, r_hi.z, r_hi.w);
    // W4..W15 are padding: rounds 4-15 add constants; rounds 16 and 17 take K + W from the
    // host (`schedule_terms`).
    s = round(s, 0xb956c25bu);
    s = round(s, 0x59f111f1u);
    s = round(s, 0x923f82a4u);
    s = round(s, 0xab1c5ed5u);
    s = round(s, 0xd807aa98u);
    s = round(s, 0x12835b01u);
    s = round(s, 0x243185beu);
    s = round(s, 0x550c7dc3u);
    s = round(s, 0x72be5d74u);
    s = round(s, 0x80deb1feu);
    s = round(s, 0x9bdc06a7u);
    s = round(s, 0xc19bf3f4u);
    s = round(s, job.schedule_lo.z);
    s = round(s, job.schedule_lo.w);
    s = round(s, 0x0fc19dc6u + w[18]);
    s = round(s, 0x240ca1ccu + w[19]);
    s = round(s, 0x2de92c6fu + w[20]);
    s = round(s, 0x4a7484aau + w[21]);
    s = round(s, 0x5cb0a9dcu + w[22]);
    s = round(s, 0x76f988dau + w[23]);
    s = round(s, 0x983e5152u + w[24]);
    s = round(s, 0xa831c66du + w[25]);
    s = round(s, 0xb00327c8u + w[26]);
    s = round(s, 0xbf597fc7u + w[27]);
    s = round(s, 0xc6e00bf3u + w[28]);
    s = round(s, 0xd5a79147u + w[29]);
    s = round(s, 0x06ca6351u + w[30]);
    s = round(s, 0x14292967u + w[31]);
    s = round(s, 0x27b70a85u + w[32]);
    s = round(s, 0x2e1b2138u + w[33]);
    s = round(s, 0x4d2c6dfcu + w[34]);
    s = round(s, 0x53380d13u + w[35]);
    s = round(s, 0x650a7354u + w[36]);
    s = round(s, 0x766a0abbu + w[37]);
    s = round(s, 0x81c2c92eu + w[38]);
    s = round(s, 0x92722c85u + w[39]);
    s = round(s, 0xa2bfe8a1u + w[40]);
    s = round(s, 0xa81a664bu + w[41]);
    s = round(s, 0xc24b8b70u + w[42]);
    s = round(s, 0xc76c51a3u + w[43]);
    s = round(s, 0xd192e819u + w[44]);
    s = round(s, 0xd6990624u + w[45]);
    s = round(s, 0xf40e3585u + w[46]);
    s = round(s, 0x106aa070u + w[47]);
    s = round(s, 0x19a4c116u + w[48]);
    s = round(s, 0x1e376c08u + w[49]);
    s = round(s, 0x2748774cu + w[50]);
    s = round(s, 0x34b0bcb5u + w[51]);
    s = round(s, 0x391c0cb3u + w[52]);
    s = round(s, 0x4ed8aa4au + w[53]);
    s = round(s, 0x5b9cca4fu + w[54]);
    s = round(s, 0x682e6ff3u + w[55]);
    s = round(s, 0x748f82eeu + w[56]);
    s = round(s, 0x78a5636fu + w[57]);
    s = round(s, 0x84c87814u + w[58]);
    s = round(s, 0x8cc70208u + w[59]);
    s = round(s, 0x90befffau + w[60]);
    s = round(s, 0xa4506cebu + w[61]);
    s = round(s, 0xbef9a3f7u + w[62]);
    s = round(s, 0xc67178f2u + w[63]);
    let m_lo = version.midstate_lo;
    let m_hi = version.midstate_hi;
    return State(
        m_lo.x + s.a, m_lo.y + s.b, m_lo.z + s.c, m_lo.w + s.d,
        m_hi.x + s.e, m_hi.y + s.f, m_hi.z + s.g, m_hi.w + s.h,
    );
}

// Whether the second hash, of the first hash's digest `h`, meets the target. W8..W15 of its
// block are padding, folded into the constants below.
fn second_hash_meets_target(h: State) -> bool {
    let h0 = h.a;
    let h1 = h.b;
    let h2 = h.c;
    let h3 = h.d;
    let h4 = h.e;
    let h5 = h.f;
    let h6 = h.g;
    let h7 = h.h;
    var s = State(0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u);
    s = round(s, 0x428a2f98u + h0);
    s = round(s, 0x71374491u + h1);
    s = round(s, 0xb5c0fbcfu + h2);
    s = round(s, 0xe9b5dba5u + h3);
    s = round(s, 0x3956c25bu + h4);
    s = round(s, 0x59f111f1u + h5);
    s = round(s, 0x923f82a4u + h6);
    s = round(s, 0xab1c5ed5u + h7);
    s = round(s, 0x5807aa98u);
    s = round(s, 0x12835b01u);
    s = round(s, 0x243185beu);
    s = round(s, 0x550c7dc3u);
    s = round(s, 0x72be5d74u);
    s = round(s, 0x80deb1feu);
    s = round(s, 0x9bdc06a7u);
    s = round(s, 0xc19bf274u);
    let x16 = ssig0(h1) + h0;
    s = round(s, 0xe49b69c1u + x16);
    let x17 = ssig0(h2) + h1 + 0x00a00000u;
    s = round(s, 0xefbe4786u + x17);
    let x18 = ssig1(x16) + ssig0(h3) + h2;
    s = round(s, 0x0fc19dc6u + x18);
    let x19 = ssig1(x17) + ssig0(h4) + h3;
    s = round(s, 0x240ca1ccu + x19);
    let x20 = ssig1(x18) + ssig0(h5) + h4;
    s = round(s, 0x2de92c6fu + x20);
    let x21 = ssig1(x19) + ssig0(h6) + h5;
    s = round(s, 0x4a7484aau + x21);
    let x22 = ssig1(x20) + ssig0(h7) + h6 + 0x00000100u;
    s = round(s, 0x5cb0a9dcu + x22);
    let x23 = ssig1(x21) + x16 + h7 + 0x11002000u;
    s = round(s, 0x76f988dau + x23);
    let x24 = ssig1(x22) + x17 + 0x80000000u;
    s = round(s, 0x983e5152u + x24);
    let x25 = ssig1(x23) + x18;
    s = round(s, 0xa831c66du + x25);
    let x26 = ssig1(x24) + x19;
    s = round(s, 0xb00327c8u + x26);
    let x27 = ssig1(x25) + x20;
    s = round(s, 0xbf597fc7u + x27);
    let x28 = ssig1(x26) + x21;
    s = round(s, 0xc6e00bf3u + x28);
    let x29 = ssig1(x27) + x22;
    s = round(s, 0xd5a79147u + x29);
    let x30 = ssig1(x28) + x23 + 0x00400022u;
    s = round(s, 0x06ca6351u + x30);
    let x31 = ssig1(x29) + x24 + ssig0(x16) + 0x00000100u;
    s = round(s, 0x14292967u + x31);
    let x32 = ssig1(x30) + x25 + ssig0(x17) + x16;
    s = round(s, 0x27b70a85u + x32);
    let x33 = ssig1(x31) + x26 + ssig0(x18) + x17;
    s = round(s, 0x2e1b2138u + x33);
    let x34 = ssig1(x32) + x27 + ssig0(x19) + x18;
    s = round(s, 0x4d2c6dfcu + x34);
    let x35 = ssig1(x33) + x28 + ssig0(x20) + x19;
    s = round(s, 0x53380d13u + x35);
    let x36 = ssig1(x34) + x29 + ssig0(x21) + x20;
    s = round(s, 0x650a7354u + x36);
    let x37 = ssig1(x35) + x30 + ssig0(x22) + x21;
    s = round(s, 0x766a0abbu + x37);
    let x38 = ssig1(x36) + x31 + ssig0(x23) + x22;
    s = round(s, 0x81c2c92eu + x38);
    let x39 = ssig1(x37) + x32 + ssig0(x24) + x23;
    s = round(s, 0x92722c85u + x39);
    let x40 = ssig1(x38) + x33 + ssig0(x25) + x24;
    s = round(s, 0xa2bfe8a1u + x40);
    let x41 = ssig1(x39) + x34 + ssig0(x26) + x25;
    s = round(s, 0xa81a664bu + x41);
    let x42 = ssig1(x40) + x35 + ssig0(x27) + x26;
    s = round(s, 0xc24b8b70u + x42);
    let x43 = ssig1(x41) + x36 + ssig0(x28) + x27;
    s = round(s, 0xc76c51a3u + x43);
    let x44 = ssig1(x42) + x37 + ssig0(x29) + x28;
    s = round(s, 0xd192e819u + x44);
    let x45 = ssig1(x43) + x38 + ssig0(x30) + x29;
    s = round(s, 0xd6990624u + x45);
    let x46 = ssig1(x44) + x39 + ssig0(x31) + x30;
    s = round(s, 0xf40e3585u + x46);
    let x47 = ssig1(x45) + x40 + ssig0(x32) + x31;
    s = round(s, 0x106aa070u + x47);
    let x48 = ssig1(x46) + x41 + ssig0(x33) + x32;
    s = round(s, 0x19a4c116u + x48);
    let x49 = ssig1(x47) + x42 + ssig0(x34) + x33;
    s = round(s, 0x1e376c08u + x49);
    let x50 = ssig1(x48) + x43 + ssig0(x35) + x34;
    s = round(s, 0x2748774cu + x50);
    let x51 = ssig1(x49) + x44 + ssig0(x36) + x35;
    s = round(s, 0x34b0bcb5u + x51);
    let x52 = ssig1(x50) + x45 + ssig0(x37) + x36;
    s = round(s, 0x391c0cb3u + x52);
    let x53 = ssig1(x51) + x46 + ssig0(x38) + x37;
    s = round(s, 0x4ed8aa4au + x53);
    let x54 = ssig1(x52) + x47 + ssig0(x39) + x38;
    s = round(s, 0x5b9cca4fu + x54);
    let x55 = ssig1(x53) + x48 + ssig0(x40) + x39;
    s = round(s, 0x682e6ff3u + x55);
    let x56 = ssig1(x54) + x49 + ssig0(x41) + x40;
    s = round(s, 0x748f82eeu + x56);
    let x57 = ssig1(x55) + x50 + ssig0(x42) + x41;
    s = round(s, 0x78a5636fu + x57);
    let x58 = ssig1(x56) + x51 + ssig0(x43) + x42;
    s = round(s, 0x84c87814u + x58);
    let x59 = ssig1(x57) + x52 + ssig0(x44) + x43;
    s = round(s, 0x8cc70208u + x59);
    let x60 = ssig1(x58) + x53 + ssig0(x45) + x44;
    s = round(s, 0x90befffau + x60);
    // After round 60 the e register holds what rounds 61-63 only shift into h, so the
    // hash's most significant word is known: it decides unless it equals the target's top
    // word; only then finish the hash and compare the rest.
    let top = byte_swap(0x5be0cd19u + s.e);
    if top == job.target_hi.w {
        let x61 = ssig1(x59) + x54 + ssig0(x46) + x45;
        s = round(s, 0xa4506cebu + x61);
        let x62 = ssig1(x60) + x55 + ssig0(x47) + x46;
        s = round(s, 0xbef9a3f7u + x62);
        let x63 = ssig1(x61) + x56 + ssig0(x48) + x47;
        s = round(s, 0xc67178f2u + x63);
        let hash = State(
            0x6a09e667u + s.a, 0xbb67ae85u + s.b, 0x3c6ef372u + s.c, 0xa54ff53au + s.d,
            0x510e527fu + s.e, 0x9b05688cu + s.f, 0x1f83d9abu + s.g, 0x5be0cd19u + s.h,
        );
        return meets_target(hash);
    }
    return top < job.target_hi.w;
}

// Appends the hit (nonce, version index) if it fits; counts it either way.
fn report(nonce: u32, version: u32) {
    let slot = atomicAdd(&results.count, 1u);
    if slot < job.limits.y {
        results.hits[2u * slot] = nonce;
        results.hits[2u * slot + 1u] = version;
    }
}

// The builtins that place an invocation in its dispatch.
struct Invocation {
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
}

// The nonce this invocation tests (x) and its index in the dispatch (y; past the dispatch's
// count, the invocation has nothing to test). Dispatches are two-dimensional to stay under
// 65,535 workgroups per dimension; the host keeps first nonce + count <= 2^32, so the nonce
// never wraps.
fn nonce_of(invocation: Invocation) -> vec2<u32> {
    let index = (invocation.group.y * invocation.groups.x + invocation.group.x) * WORKGROUP_SIZE + invocation.local;
    return vec2<u32>(job.tail.w + index, index);
}

// Tests one nonce under the header's own version.
@compute @workgroup_size(WORKGROUP_SIZE)
fn search(invocation: Invocation) {
    let nonce = nonce_of(invocation);
    if nonce.y >= job.limits.x {
        return;
    }
    // Block word W3: the nonce field is little-endian in the header.
    let n = byte_swap(nonce.x);
    if second_hash_meets_target(first_hash(job.versions[0], n, first_schedule(n))) {
        report(nonce.x, 0u);
    }
}

// Tests one nonce under each of the job's versions, with the first hash's schedule shared.
@compute @workgroup_size(WORKGROUP_SIZE)
fn search_rolled(invocation: Invocation) {
    let nonce = nonce_of(invocation);
    if nonce.y >= job.limits.x {
        return;
    }
    let n = byte_swap(nonce.x);
    let w = first_schedule(n);
    // The host sends at most 16; the bound keeps the index inside the array regardless.
    let versions = min(job.limits.z, 16u);
    for (var v = 0u; v < versions; v++) {
        if second_hash_meets_target(first_hash(job.versions[v], n, w)) {
            report(nonce.x, v);
        }
    }
}
