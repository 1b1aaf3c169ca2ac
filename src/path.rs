//! Request paths: the one canonical form that routing judges and that goes upstream, the
//! ambiguity rule for paths a lenient backend would read differently, and prefix matching.
//! A leaf: it depends on no other module of the crate.

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

/// Why a request path is ambiguous: the gateway and a lenient backend (one that decodes
/// `%2F`, treats `\` as `/`, strips `;` parameters or decodes twice, then resolves `..`)
/// could route it to different places. Envoy's `path_with_escaped_slashes_action` and
/// Istio's fix for CVE-2021-31920 refuse the same shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Ambiguity {
    /// `%2F` or `%5C`.
    #[error("an encoded `/` or `\\`")]
    EncodedSeparator,
    /// A literal `\`.
    #[error("a `\\`")]
    Backslash,
    /// A `;` (or `%3B`): a path parameter that some backends strip.
    #[error("a `;`")]
    Semicolon,
    /// `%25` encoding (again) a separator, `.`, `;`, `%` or a control byte.
    #[error("a doubly-encoded character")]
    DoubleEncoded,
    /// A control byte, literal or encoded.
    #[error("a control character")]
    Control,
    /// Percent-encoded bytes that do not decode to UTF-8 (overlong forms like `%C0%AF`).
    #[error("percent-encoded bytes that are not UTF-8")]
    NotUtf8,
}

/// Rounds of `%25` decoding looked through before a path is called ambiguous anyway.
const MAX_DECODE_ROUNDS: usize = 4;

/// The first ambiguity in a raw request path, if any (see [`Ambiguity`]). Literal bytes are
/// judged as sent; encodings are decoded round by round while `%25` hides another one.
pub fn ambiguity(path: &str) -> Option<Ambiguity> {
    let raw = path.as_bytes();
    if let Some(&b) = raw
        .iter()
        .find(|&&b| b == b'\\' || b == b';' || b.is_ascii_control())
    {
        return Some(match b {
            b'\\' => Ambiguity::Backslash,
            b';' => Ambiguity::Semicolon,
            _ => Ambiguity::Control,
        });
    }
    // The common case (`/v1/graphql`): nothing encoded, nothing to decode, no allocation.
    if !raw.contains(&b'%') {
        return None;
    }
    let mut current = raw.to_vec();
    for round in 0..=MAX_DECODE_ROUNDS {
        let mut decoded = Vec::with_capacity(current.len());
        let mut encoded_percent = false;
        let mut i = 0;
        while i < current.len() {
            let pair = (
                current.get(i + 1).copied().and_then(hex),
                current.get(i + 2).copied().and_then(hex),
            );
            match (current[i], pair) {
                (b'%', (Some(hi), Some(lo))) => {
                    let c = hi * 16 + lo;
                    let found = match c {
                        b'/' | b'\\' if round == 0 => Some(Ambiguity::EncodedSeparator),
                        b';' if round == 0 => Some(Ambiguity::Semicolon),
                        c if c.is_ascii_control() && round == 0 => Some(Ambiguity::Control),
                        b'/' | b'\\' | b';' | b'.' if round > 0 => Some(Ambiguity::DoubleEncoded),
                        c if c.is_ascii_control() => Some(Ambiguity::DoubleEncoded),
                        // A doubly-encoded non-ASCII byte: a backend that decodes twice may
                        // also accept overlong forms (`%25c0%25ae` is `.` to it).
                        c if c >= 0x80 && round > 0 => Some(Ambiguity::DoubleEncoded),
                        _ => None,
                    };
                    if found.is_some() {
                        return found;
                    }
                    encoded_percent |= c == b'%';
                    decoded.push(c);
                    i += 3;
                }
                // IIS-style `%u002f` once a `%25` has been decoded.
                (b'%', _) if round > 0 && matches!(current.get(i + 1), Some(b'u' | b'U')) => {
                    return Some(Ambiguity::DoubleEncoded);
                }
                (b, _) => {
                    decoded.push(b);
                    i += 1;
                }
            }
        }
        if round == 0 && std::str::from_utf8(&decoded).is_err() {
            return Some(Ambiguity::NotUtf8);
        }
        if !encoded_percent {
            return None;
        }
        current = decoded;
    }
    Some(Ambiguity::DoubleEncoded)
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

/// The path of an original-URI header's value: origin-form (`/p?q`) or absolute-form
/// (`https://host/p?q`, as ingress-nginx writes `X-Original-URL`). `None` for anything else.
pub fn original_uri_path(value: &str) -> Option<&str> {
    let target = if value.starts_with('/') {
        value
    } else {
        let (scheme, rest) = value.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        let at = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        match &rest[at..] {
            "" => "/",
            r if r.starts_with('/') => r,
            // `https://host?x`: the path is `/`.
            _ => "/",
        }
    };
    Some(target.split('?').next().unwrap_or_default())
}

/// Whether a raw request path that a proxy in front will route (nginx `auth_request`,
/// ingress-nginx) is public. nginx decodes every percent-encoding into `$uri`, merges
/// slashes and resolves dot segments before it picks a location, but passes the *raw*
/// target on, which the backend may route without resolving anything (Express prefix
/// mounts) or after decoding once more. So only a path that is already canonical — no
/// ambiguity (see [`ambiguity`]), no `//` or `#`, no dot segment, no encoded unreserved
/// character, upper-case hex — can be public: then every reading of it is the same.
pub fn public_as_proxied(raw_path: &str, public_prefixes: &[String]) -> bool {
    if ambiguity(raw_path).is_some() || raw_path.contains("//") || raw_path.contains('#') {
        return false;
    }
    normalize_path(raw_path).is_ok_and(|p| p == raw_path && is_public(&p, public_prefixes))
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
    fn ambiguous_paths_are_named() {
        use Ambiguity::*;
        for (path, why) in [
            ("/public/..%2Fv1/graphql", EncodedSeparator),
            ("/public/..%2fv1/graphql", EncodedSeparator),
            ("/public/..%5cv1/graphql", EncodedSeparator),
            ("/public/%2e%2e%5cv1/graphql", EncodedSeparator),
            ("/public/..\\v1/graphql", Backslash),
            ("/public/..;/v1/graphql", Semicolon),
            ("/public;x=1/../v1/graphql", Semicolon),
            ("/public/..%3B/v1/graphql", Semicolon),
            ("/public/..%252f..%252fv1/graphql", DoubleEncoded),
            ("/public/..%255c/v1/graphql", DoubleEncoded),
            ("/public/%252e%252e/v1/graphql", DoubleEncoded),
            ("/public/%25252e%25252e/v1/graphql", DoubleEncoded),
            ("/public/%25%32%66../v1", DoubleEncoded),
            ("/public/%253b/v1", DoubleEncoded),
            ("/public/%2500", DoubleEncoded),
            ("/public/%00/x", Control),
            ("/public/%0a/x", Control),
            ("/public/%7f/x", Control),
            ("/public/\t/x", Control),
            ("/public/..%c0%af../v1/graphql", NotUtf8),
            ("/public/%e0%80%ae%e0%80%ae/v1", NotUtf8),
            ("/public/%ff", NotUtf8),
            ("/%2525252525252541", DoubleEncoded),
            ("/public/%25c0%25ae%25c0%25ae/v1/graphql", DoubleEncoded),
            ("/public/..%25u002f..%25u002fv1/graphql", DoubleEncoded),
            ("/public/%25E9", DoubleEncoded),
        ] {
            assert_eq!(ambiguity(path), Some(why), "{path}");
        }
        for path in [
            "/v1/graphql",
            "/public/%2e%2e/v1/graphql",
            "/a%20b/c%41",
            "/caf%C3%A9",
            "/caf\u{e9}",
            "/a%2541",
            "/x%25y",
            "/a//b",
            "/",
        ] {
            assert_eq!(ambiguity(path), None, "{path}");
        }
    }

    #[test]
    fn original_uri_paths() {
        assert_eq!(original_uri_path("/public/x?a=1"), Some("/public/x"));
        assert_eq!(
            original_uri_path("https://api.example.com/public/x?a"),
            Some("/public/x")
        );
        assert_eq!(original_uri_path("HTTP://h"), Some("/"));
        assert_eq!(original_uri_path("http://h?x=/public/y"), Some("/"));
        assert_eq!(original_uri_path("ftp://h/public/x"), None);
        assert_eq!(original_uri_path("public/x"), None);
        assert_eq!(original_uri_path(""), None);
    }

    #[test]
    fn proxied_paths_are_public_only_when_unambiguous() {
        let prefixes = vec!["/public".to_string()];
        assert!(public_as_proxied("/public/x", &prefixes));
        assert!(public_as_proxied("/public/a%20b", &prefixes));
        for p in [
            // Not canonical: nginx routes the resolved form, the backend gets these bytes.
            "/pub%6cic/x",
            "/admin/../public/x",
            "/admin/%2e%2e/public/x",
            "/public/./x",
            "/public/a%2fb",
            "/public/a%20b%2e",
            "/public/..%2Fv1/graphql",
            "/public/..%252f/v1/graphql",
            "/public/..;/v1/graphql",
            "/public/..\\v1/graphql",
            "/public/..%5c/v1/graphql",
            "/public/%2e%2e%5cv1/graphql",
            "/public/..%c0%af/v1/graphql",
            "/public//../v1/graphql",
            "/public/../v1/graphql",
            "/public/x#/../../v1",
            "/v1/graphql",
            "/public%zz",
        ] {
            assert!(!public_as_proxied(p, &prefixes), "{p}");
        }
    }
}
