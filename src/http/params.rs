//! Query-string parsing into validated values. Numbers are decimal
//! `[0-9]+` fitting a u64, booleans `1|0|true|false`; a repeated parameter is
//! ambiguous and refused. Unknown parameters are ignored (chukcha clients
//! send nothing else, and future clients may add hints).

use std::borrow::Cow;

use super::error::ApiError;
use crate::names::{Category, ChunkName};

/// Parsed query parameters of one request.
#[derive(Debug, Default)]
pub struct Query<'a> {
    pairs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> Query<'a> {
    /// Parses `a=1&b=2` (percent-decoded).
    #[must_use]
    pub fn parse(query: Option<&'a str>) -> Self {
        Self {
            pairs: query
                .map(|q| form_urlencoded::parse(q.as_bytes()).collect())
                .unwrap_or_default(),
        }
    }

    fn get(&self, key: &str) -> Result<Option<&str>, ApiError> {
        let mut found = None;
        for (k, v) in &self.pairs {
            if k == key {
                if found.is_some() {
                    return Err(ApiError::bad_request(format!(
                        "parameter {key} is given more than once; give it once"
                    )));
                }
                found = Some(v.as_ref());
            }
        }
        Ok(found)
    }

    /// A required parameter's raw value.
    ///
    /// # Errors
    /// 400 when missing or given twice.
    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key)?
            .ok_or_else(|| ApiError::bad_request(format!("missing parameter {key}")))
    }

    /// The required `category` parameter.
    ///
    /// # Errors
    /// 400 when missing or invalid.
    pub fn category(&self) -> Result<Category, ApiError> {
        Ok(Category::parse(self.required("category")?)?)
    }

    /// The required `chunk` parameter.
    ///
    /// # Errors
    /// 400 when missing or invalid.
    pub fn chunk(&self) -> Result<ChunkName, ApiError> {
        Ok(ChunkName::parse(self.required("chunk")?)?)
    }

    /// An optional chunk name.
    ///
    /// # Errors
    /// 400 when present but invalid.
    pub fn opt_chunk(&self, key: &str) -> Result<Option<ChunkName>, ApiError> {
        Ok(self.get(key)?.map(ChunkName::parse).transpose()?)
    }

    /// A required number.
    ///
    /// # Errors
    /// 400 when missing or not a decimal u64.
    pub fn u64(&self, key: &str) -> Result<u64, ApiError> {
        parse_u64(key, self.required(key)?)
    }

    /// An optional number.
    ///
    /// # Errors
    /// 400 when present but not a decimal u64.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ApiError> {
        self.get(key)?.map(|v| parse_u64(key, v)).transpose()
    }

    /// An optional boolean.
    ///
    /// # Errors
    /// 400 when present but not `1|0|true|false`.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ApiError> {
        self.get(key)?
            .map(|v| match v {
                "1" | "true" => Ok(true),
                "0" | "false" => Ok(false),
                _ => Err(ApiError::bad_request(format!(
                    "parameter {key}={} is not a boolean; use 1, 0, true or false",
                    shorten(v)
                ))),
            })
            .transpose()
    }
}

fn parse_u64(key: &str, v: &str) -> Result<u64, ApiError> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::bad_request(format!(
            "parameter {key}={} is not a decimal number; use digits 0-9 only",
            shorten(v)
        )));
    }
    v.parse::<u64>().map_err(|_| {
        ApiError::bad_request(format!(
            "parameter {key}={} does not fit in 64 bits (max 18446744073709551615)",
            shorten(v)
        ))
    })
}

fn shorten(v: &str) -> String {
    let mut s: String = v.chars().take(40).collect();
    if s.len() < v.len() {
        s.push('…');
    }
    format!("{s:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        let q = Query::parse(Some("a=12&b=-1&c=1.5&d=&e=18446744073709551616&f=%31"));
        assert_eq!(q.u64("a").unwrap(), 12);
        for k in ["b", "c", "d", "e", "missing"] {
            assert!(q.u64(k).is_err(), "{k}");
        }
        assert_eq!(q.u64("f").unwrap(), 1);
    }

    #[test]
    fn duplicates_and_bools() {
        let q = Query::parse(Some("sync=1&x=true&x=false&y=yes"));
        assert_eq!(q.opt_bool("sync").unwrap(), Some(true));
        assert!(q.opt_bool("x").is_err());
        assert!(q.opt_bool("y").is_err());
        assert_eq!(q.opt_bool("z").unwrap(), None);
    }

    proptest::proptest! {
        /// Any query string: parsing never panics, a number is only ever
        /// what its decimal digits say, and a category is only ever a
        /// valid name.
        #[test]
        fn any_query_is_parsed_or_refused(q in "[a-z=&%0-9A-F._/\\-]{0,80}|\\PC{0,60}") {
            let query = Query::parse(Some(&q));
            if let Ok(n) = query.u64("off") {
                let raw = form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "off").map(|(_, v)| v.into_owned());
                proptest::prop_assert_eq!(raw.as_deref().map(str::parse::<u64>), Some(Ok(n)));
            }
            if let Ok(c) = query.category() {
                proptest::prop_assert!(c.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            }
            let _ = query.opt_bool("sync");
            let _ = query.chunk();
        }
    }

    #[test]
    fn encoded_traversal_is_still_rejected() {
        let q = Query::parse(Some("category=%2e%2e%2fetc"));
        assert!(q.category().is_err());
    }
}
