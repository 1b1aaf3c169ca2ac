//! Request routing: one canonical form of the path decides public vs protected, and that
//! same form is what goes upstream, so the check and the upstream cannot disagree.

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Needs a valid session; identity is injected.
    Protected,
    /// Forwarded without authentication and without identity.
    Public,
    /// A session API the gateway answers itself (never forwarded).
    Dialect(crate::dialect::Endpoint),
}

/// Why a path cannot be normalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not an absolute path (`*`, `http://...` authority forms and the like).
    #[error("the request path must be absolute")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the request path has an invalid percent-encoding")]
    BadPercentEncoding,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Canonical form of a request path (RFC 3986 §6.2.2): percent-encoded unreserved characters
/// are decoded, other percent-encodings are upper-cased, and `.`/`..` segments are removed.
/// `%2F` stays encoded, so it never becomes a segment separator.
pub fn normalize_path(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadPercentEncoding);
            };
            let c = hi * 16 + lo;
            if is_unreserved(c) {
                decoded.push(c);
            } else {
                decoded.extend_from_slice(&[
                    b'%',
                    bytes[i + 1].to_ascii_uppercase(),
                    bytes[i + 2].to_ascii_uppercase(),
                ]);
            }
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    // Only ASCII bytes were decoded and every other byte was copied whole, so the result is
    // as valid UTF-8 as the input was.
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::BadPercentEncoding)?;
    Ok(remove_dot_segments(&decoded))
}

/// RFC 3986 §5.2.4, for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut segments = path.split('/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "." => trailing_slash = last,
            ".." => {
                out.pop();
                trailing_slash = last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    result
}

/// Whether a normalised path falls under one of the public prefixes, on a segment boundary
/// (`/public` matches `/public` and `/public/x`, not `/publicity`).
pub fn is_public(path: &str, prefixes: &[String]) -> bool {
    prefixes.iter().any(|p| {
        let p = p.trim_end_matches('/');
        path == p
            || path
                .strip_prefix(p)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Routes a normalised path.
pub fn route(path: &str, public_prefixes: &[String]) -> Route {
    if is_public(path, public_prefixes) {
        Route::Public
    } else {
        Route::Protected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> String {
        normalize_path(p).unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(n("/public/../v1/graphql"), "/v1/graphql");
        assert_eq!(n("/a/./b/../c"), "/a/c");
        assert_eq!(n("/../../etc"), "/etc");
        assert_eq!(n("/a/b/.."), "/a/");
        assert_eq!(n("/a/b/."), "/a/b/");
        assert_eq!(n("/"), "/");
        assert_eq!(n("/a//b"), "/a//b");
    }

    #[test]
    fn unreserved_percent_encodings_are_decoded() {
        assert_eq!(n("/public/%2e%2e/v1/graphql"), "/v1/graphql");
        assert_eq!(n("/public/%2E%2E/v1"), "/v1");
        assert_eq!(n("/%70ublic/x"), "/public/x");
        assert_eq!(n("/a%2fb"), "/a%2Fb");
        assert_eq!(n("/a%20b"), "/a%20b");
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(normalize_path("/a%zz"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("/a%2"), Err(PathError::BadPercentEncoding));
        assert_eq!(normalize_path("*"), Err(PathError::NotAbsolute));
        assert_eq!(normalize_path(""), Err(PathError::NotAbsolute));
    }

    #[test]
    fn non_ascii_survives() {
        assert_eq!(n("/caf\u{e9}/./x"), "/caf\u{e9}/x");
        assert_eq!(n("/\u{e9}/%2e%2e/y"), "/y");
    }

    #[test]
    fn normalisation_is_idempotent() {
        for p in [
            "/public/../v1",
            "/a/%2e/b/",
            "/x%2fy/../z",
            "/%7euser",
            "/a/b/c/../../d",
        ] {
            let once = n(p);
            assert_eq!(n(&once), once, "{p}");
        }
    }

    #[test]
    fn public_prefix_is_segment_bounded() {
        let prefixes = vec!["/public".to_string()];
        assert!(is_public("/public", &prefixes));
        assert!(is_public("/public/x", &prefixes));
        assert!(!is_public("/publicity", &prefixes));
        assert!(!is_public("/v1/graphql", &prefixes));
        assert_eq!(
            route(&n("/public/../v1/graphql"), &prefixes),
            Route::Protected
        );
        assert_eq!(
            route(&n("/public/%2e%2e/v1/graphql"), &prefixes),
            Route::Protected
        );
    }
}
