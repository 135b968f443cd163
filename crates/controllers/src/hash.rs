//! Stable, dependency-free hashes: FNV-1a (32 and 64 bit) and the Kubernetes "safe" encoding that
//! turns a number into a label-friendly string without vowels (so no words are spelled).

const FNV32_OFFSET: u32 = 0x811c_9dc5;
const FNV32_PRIME: u32 = 0x0100_0193;
const FNV64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV64_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Characters of safe-encoded strings: consonants and digits that cannot spell words.
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub(crate) fn fnv1a_32(parts: &[&[u8]]) -> u32 {
    let mut hash = FNV32_OFFSET;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(FNV32_PRIME);
    }
    hash
}

pub(crate) fn fnv1a_64(parts: &[&[u8]]) -> u64 {
    let mut hash = FNV64_OFFSET;
    for byte in parts.iter().flat_map(|part| part.iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(FNV64_PRIME);
    }
    hash
}

/// The decimal digits of `value`, each mapped into [`SAFE_ALPHABET`] (Kubernetes'
/// `SafeEncodeString(fmt.Sprint(hash))`), e.g. a pod-template-hash such as `6d5f9c8b7`.
pub(crate) fn safe_encode(value: u32) -> String {
    value
        .to_string()
        .bytes()
        .map(|b| char::from(SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_reference_vectors() {
        // Published FNV-1a test vectors.
        assert_eq!(fnv1a_32(&[b""]), 0x811c_9dc5);
        assert_eq!(fnv1a_32(&[b"a"]), 0xe40c_292c);
        assert_eq!(fnv1a_32(&[b"fo", b"obar"]), 0xbf9c_f968);
        assert_eq!(fnv1a_64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(&[b"foobar"]), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn safe_encoding_avoids_vowels() {
        let text = safe_encode(1_234_567_890);
        assert_eq!(text.len(), 10);
        assert!(!text.contains(['a', 'e', 'i', 'o', 'u']), "{text}");
    }
}
