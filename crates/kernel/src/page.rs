//! Cursor pagination (API-CONVENTIONS.md): `limit` 1–100 (default 20),
//! `starting_after` an opaque cursor, answers `{data, has_more, next_cursor}`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::ApiError;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// Query parameters of every list route.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
pub struct PageParams {
    /// 1–100, default 20.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub starting_after: Option<String>,
}

/// A checked page request: the limit is in range and the cursor decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    /// The sort key of the last item already seen.
    pub after: Option<String>,
}

impl PageParams {
    pub fn parse(&self) -> Result<PageRequest, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(ApiError::invalid("invalid_limit", "limit must be between 1 and 100")
                .with_field("limit"));
        }
        let after = match &self.starting_after {
            None => None,
            Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| {
                ApiError::invalid("invalid_cursor", "starting_after is not a cursor we issued")
                    .with_field("starting_after")
            })?),
        };
        Ok(PageRequest { limit, after })
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows fetched in key order: the extra
    /// row only tells whether there is more. `key` gives an item's sort key.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> String) -> Self {
        let has_more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if has_more { rows.last().map(|r| encode_cursor(&key(r))) } else { None };
        Self { data: rows, has_more, next_cursor }
    }
}

/// Cursors are hex so they survive any URL unescaped; opaque to clients.
pub fn encode_cursor(key: &str) -> String {
    key.bytes().map(|b| format!("{b:02x}")).collect()
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
    if !cursor.len().is_multiple_of(2) || cursor.len() > 1024 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..cursor.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(cursor.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked() {
        assert_eq!(PageParams::default().parse().unwrap().limit, 20);
        let bad = PageParams { limit: Some(101), starting_after: None }.parse().unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("limit"));
        assert!(PageParams { limit: Some(0), starting_after: None }.parse().is_err());
        assert!(PageParams { limit: None, starting_after: Some("zz".into()) }.parse().is_err());
    }

    #[test]
    fn pages_know_when_there_is_more() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(page.data, vec![1, 2]);
        assert!(page.has_more);
        let cursor = page.next_cursor.unwrap();
        assert_eq!(decode_cursor(&cursor).as_deref(), Some("2"));
        let last = Page::from_rows(vec![1], 2, |n| n.to_string());
        assert!(!last.has_more && last.next_cursor.is_none());
    }
}
