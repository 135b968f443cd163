//! String interning and the small hash functions placement uses.
//!
//! Label keys, values, namespaces and taint strings become `u32` ids once, when the snapshot is
//! built or a pod is bound, so the per-node filter loop compares integers instead of strings.
//! Stable hashes (FNV-1a + splitmix64) drive the deterministic tie-break: the same pod and node
//! names give the same choice on every run and every Rust version.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Id of a string that is not interned. No node label, taint or bound pod carries it, so
/// comparisons against it simply fail: an unknown value matches nothing.
pub(crate) const UNKNOWN: u32 = u32::MAX;

#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    ids: HashMap<String, u32>,
    strings: Vec<String>,
    /// Each string read as an integer, for the `Gt`/`Lt` node-affinity operators.
    numbers: Vec<Option<i64>>,
}

impl Interner {
    pub(crate) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        // Ids stay below UNKNOWN: a snapshot never holds 4 billion distinct strings in memory.
        let id = self.strings.len() as u32;
        self.ids.insert(s.to_string(), id);
        self.strings.push(s.to_string());
        self.numbers.push(s.parse().ok());
        id
    }

    /// The id of `s`, or `UNKNOWN` when nothing in the snapshot uses it.
    pub(crate) fn lookup(&self, s: &str) -> u32 {
        self.ids.get(s).copied().unwrap_or(UNKNOWN)
    }

    pub(crate) fn resolve(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", String::as_str)
    }

    pub(crate) fn number(&self, id: u32) -> Option<i64> {
        self.numbers.get(id as usize).copied().flatten()
    }
}

/// Hasher for maps keyed by small integer ids (node indexes): one multiply, no SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// FNV-1a over the given parts, with a separator byte between parts.
pub(crate) fn stable_hash(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// splitmix64's finalizer: spreads nearby inputs over all 64 bits.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
