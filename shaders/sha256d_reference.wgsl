// Reference SHA-256d nonce search: a plain transcription of FIPS 180-4, with no mining
// precomputations. Each invocation tests one nonce: it compresses the header's second block
// from the midstate, hashes the 32-byte digest again, and compares the whole 256-bit result
// with the target. It exists to check the optimized `sha256d.wgsl` against (differential
// tests) and to measure what the optimizations are worth; the search uses the optimized one.
//
// The bindings and the `Job` layout are shared with `sha256d.wgsl` and filled by
// `node/src/search/gpu/job.rs` (`JobUniform`); this shader ignores the precomputed fields.

// What differs between the versions of a header.
struct Version {
    // The SHA-256 state after the first 64 header bytes.
    midstate_lo: vec4<u32>,
    midstate_hi: vec4<u32>,
    // A host precomputation, used only by the optimized shader.
    round3_lo: vec4<u32>,
    round3_hi: vec4<u32>,
}

struct Job {
    // xyz: header bytes 64..76 as big-endian words; w: the dispatch's first nonce.
    tail: vec4<u32>,
    // The target as 32-bit words, least significant first (`Target::to_le_words`).
    target_lo: vec4<u32>,
    target_hi: vec4<u32>,
    // x: nonces in this dispatch; y: hits `results` can hold; z: versions; w: zero.
    limits: vec4<u32>,
    // Host precomputations, used only by the optimized shader.
    schedule_lo: vec4<u32>,
    schedule_hi: vec4<u32>,
    // The header's own version first; this shader searches that one only.
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

var<private> K: array<u32, 64> = array<u32, 64>(
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
);

const IV = array<u32, 8>(
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
);

fn rotr(x: u32, n: u32) -> u32 {
    return (x >> n) | (x << (32u - n));
}

fn byte_swap(x: u32) -> u32 {
    return (x << 24u) | ((x & 0xff00u) << 8u) | ((x >> 8u) & 0xff00u) | (x >> 24u);
}

// One SHA-256 compression of `block` into `state`.
fn compress(state: array<u32, 8>, block: array<u32, 16>) -> array<u32, 8> {
    // Runtime indexing needs variables, not values.
    var words = block;
    var w: array<u32, 64>;
    for (var i = 0u; i < 16u; i++) {
        w[i] = words[i];
    }
    for (var i = 16u; i < 64u; i++) {
        let s0 = rotr(w[i - 15u], 7u) ^ rotr(w[i - 15u], 18u) ^ (w[i - 15u] >> 3u);
        let s1 = rotr(w[i - 2u], 17u) ^ rotr(w[i - 2u], 19u) ^ (w[i - 2u] >> 10u);
        w[i] = s1 + w[i - 7u] + s0 + w[i - 16u];
    }
    var v = state;
    for (var i = 0u; i < 64u; i++) {
        let e = v[4];
        let a = v[0];
        let t1 = v[7] + (rotr(e, 6u) ^ rotr(e, 11u) ^ rotr(e, 25u)) + ((e & v[5]) ^ (~e & v[6])) + K[i] + w[i];
        let t2 = (rotr(a, 2u) ^ rotr(a, 13u) ^ rotr(a, 22u)) + ((a & v[1]) ^ (a & v[2]) ^ (v[1] & v[2]));
        v[7] = v[6];
        v[6] = v[5];
        v[5] = e;
        v[4] = v[3] + t1;
        v[3] = v[2];
        v[2] = v[1];
        v[1] = a;
        v[0] = t1 + t2;
    }
    var out = state;
    for (var i = 0u; i < 8u; i++) {
        out[i] += v[i];
    }
    return out;
}

// Whether the digest given as state words meets the target: the hash, read as a
// little-endian number, has word i = byte_swap(state[i]); compare from the top word down.
fn meets_target(state: array<u32, 8>) -> bool {
    var words = state;
    var limit = array<u32, 8>(
        job.target_lo.x, job.target_lo.y, job.target_lo.z, job.target_lo.w,
        job.target_hi.x, job.target_hi.y, job.target_hi.z, job.target_hi.w,
    );
    for (var i = 7i; i >= 0i; i--) {
        let h = byte_swap(words[i]);
        if h != limit[i] {
            return h < limit[i];
        }
    }
    return true;
}

@compute @workgroup_size(WORKGROUP_SIZE)
fn search(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    // Dispatches are two-dimensional to stay under 65,535 workgroups per dimension.
    let index = (group.y * groups.x + group.x) * WORKGROUP_SIZE + local;
    if index >= job.limits.x {
        return;
    }
    // The host keeps first nonce + count <= 2^32, so this never wraps.
    let nonce = job.tail.w + index;

    let lo = job.versions[0].midstate_lo;
    let hi = job.versions[0].midstate_hi;
    let midstate = array<u32, 8>(lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w);
    // Header bytes 64..80 and the padding of an 80-byte (640-bit) message.
    let tail_block = array<u32, 16>(
        job.tail.x, job.tail.y, job.tail.z, byte_swap(nonce),
        0x80000000u, 0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u, 0u, 640u,
    );
    let first = compress(midstate, tail_block);
    // The 32-byte first digest and the padding of a 256-bit message.
    let digest_block = array<u32, 16>(
        first[0], first[1], first[2], first[3], first[4], first[5], first[6], first[7],
        0x80000000u, 0u, 0u, 0u, 0u, 0u, 0u, 256u,
    );
    let hash = compress(IV, digest_block);

    if meets_target(hash) {
        let slot = atomicAdd(&results.count, 1u);
        if slot < job.limits.y {
            results.hits[2u * slot] = nonce;
            results.hits[2u * slot + 1u] = 0u;
        }
    }
}
