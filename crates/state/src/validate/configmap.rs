//! Validation of ConfigMaps: keys, key overlap between `data` and `binaryData`, base64, and the
//! total size limit.

use super::{names, Errors, Path};
use crate::objects::ConfigMap;

/// Largest total of keys and values in one ConfigMap, as in Kubernetes.
pub const MAX_CONFIG_MAP_BYTES: usize = 1024 * 1024;

pub(super) fn validate_config_map(config_map: &ConfigMap, errors: &mut Errors) {
    let root = Path::Root;
    let data = root.field("data");
    let binary_data = root.field("binaryData");
    let mut total_bytes = 0;
    for (key, value) in &config_map.data {
        errors.check(&data, key, names::config_key(key));
        total_bytes += key.len() + value.len();
    }
    for (key, value) in &config_map.binary_data {
        errors.check(&binary_data, key, names::config_key(key));
        if config_map.data.contains_key(key) {
            errors.invalid(&binary_data, key, "duplicate of key present in data");
        }
        if !is_base64(value) {
            errors.invalid(&binary_data.key(key), "<binary>", "must be valid base64");
        }
        total_bytes += key.len() + value.len() / 4 * 3;
    }
    if total_bytes > MAX_CONFIG_MAP_BYTES {
        errors.push(
            &root,
            format!("Too long: must have at most {MAX_CONFIG_MAP_BYTES} bytes"),
        );
    }
}

/// Standard padded base64 (RFC 4648 §4).
fn is_base64(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return false;
    }
    let padding = bytes.iter().rev().take_while(|&&b| b == b'=').count();
    if padding > 2 {
        return false;
    }
    let body = &bytes[..bytes.len() - padding];
    body.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}
