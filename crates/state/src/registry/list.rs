//! Lists: one kind in one namespace or all, filtered by the caller's selectors, paginated with
//! continue tokens, every page read at the revision of the first so the whole list is one
//! consistent snapshot.

use flotilla_consensus::RangeQuery;
use serde_json::Value;

use super::keys::{self, KindInfo, Scope};
use super::object;
use super::{ApiError, Registry, Store, WatchFilter};

/// Largest page a client may ask for (and the page size when it names none).
pub const MAX_PAGE_ITEMS: usize = 5_000;
/// Most stored objects examined to fill one filtered page; past it, the page ends early with a
/// continue token.
pub const MAX_SCANNED_PER_PAGE: usize = 50_000;
/// Objects read from the store per step while filling a page.
const SCAN_STEP: usize = 1_000;

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    /// 0: [`MAX_PAGE_ITEMS`].
    pub limit: usize,
    pub continue_token: Option<String>,
    /// Answer from this peer's state without a read barrier (may be stale).
    pub stale: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub items: Vec<Value>,
    /// The revision the list is consistent at: watch from here to see every later change.
    pub resource_version: i64,
    pub continue_token: Option<String>,
}

fn encode_token(revision: i64, next_key: &[u8]) -> String {
    let hex: String = next_key.iter().map(|b| format!("{b:02x}")).collect();
    format!("{revision}:{hex}")
}

fn decode_token(token: &str, prefix: &[u8]) -> Result<(i64, Vec<u8>), ApiError> {
    let bad = || {
        ApiError::Invalid(format!(
            "continue: {token:?} is not a continue token from this list"
        ))
    };
    let (revision, hex) = token.split_once(':').ok_or_else(bad)?;
    let revision: i64 = revision.parse().map_err(|_| bad())?;
    if hex.len() % 2 != 0 || hex.len() > 8192 {
        return Err(bad());
    }
    let key: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if !key.starts_with(prefix) || revision <= 0 {
        return Err(bad());
    }
    Ok((revision, key))
}

impl<S: Store + Clone> Registry<S> {
    pub async fn list(
        &self,
        info: &KindInfo,
        scope: &Scope,
        filter: &WatchFilter,
        options: &ListOptions,
    ) -> Result<ListPage, ApiError> {
        let limit = match options.limit {
            0 => MAX_PAGE_ITEMS,
            n => n.min(MAX_PAGE_ITEMS),
        };
        let prefix = keys::scope_prefix(info, scope);
        let (mut revision, mut next_key) = match &options.continue_token {
            Some(token) => decode_token(token, &prefix)?,
            None => (0, prefix.clone()),
        };
        let mut items = Vec::new();
        let mut scanned = 0;
        loop {
            let mut query = RangeQuery::new(keys::rest_of(&prefix, &next_key));
            query.limit = SCAN_STEP.min(limit - items.len() + 1).max(1);
            query.revision = revision;
            // Only the first read needs the barrier; later pages read a fixed revision.
            let stale = options.stale || revision != 0;
            let (result, read_at) = self.store.range(query, stale).await?;
            if revision == 0 {
                revision = read_at;
            }
            for kv in result.kvs.iter() {
                if items.len() == limit {
                    return Ok(ListPage {
                        items,
                        resource_version: revision,
                        continue_token: Some(encode_token(revision, &kv.key)),
                    });
                }
                scanned += 1;
                next_key = keys::after(&kv.key);
                if filter.matches_json(&kv.value)? {
                    let obj: Value = serde_json::from_slice(&kv.value)?;
                    items.push(object::with_resource_version(obj, kv.mod_revision));
                }
            }
            if !result.more {
                return Ok(ListPage {
                    items,
                    resource_version: revision,
                    continue_token: None,
                });
            }
            if scanned >= MAX_SCANNED_PER_PAGE {
                return Ok(ListPage {
                    items,
                    resource_version: revision,
                    continue_token: Some(encode_token(revision, &next_key)),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = encode_token(42, b"/registry/pods/default/web-1\0");
        assert_eq!(
            decode_token(&token, b"/registry/pods/").unwrap(),
            (42, b"/registry/pods/default/web-1\0".to_vec())
        );
        for bad in ["", "x", "12", "12:zz", "0:00", "-1:2f", "12:2f726567"] {
            assert!(decode_token(bad, b"/registry/pods/").is_err(), "{bad}");
        }
    }
}
