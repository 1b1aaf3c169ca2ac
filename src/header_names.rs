//! The names of identity headers and what a header value may hold: rules shared by config
//! validation, header rewriting, WebSocket `connection_init` rewriting and forward-auth.
//! A leaf: it depends on no other module of the crate.

/// `x-hasura-user-id`.
pub const USER_ID: &str = "x-hasura-user-id";
/// `x-hasura-business-id`.
pub const BUSINESS_ID: &str = "x-hasura-business-id";
/// `x-hasura-role`.
pub const ROLE: &str = "x-hasura-role";
/// `x-host-id`.
pub const HOST_ID: &str = "x-host-id";
/// `x-request-id`: the client's if well-formed, else the gateway's; sent upstream and back.
pub const REQUEST_ID: &str = "x-request-id";
/// `x-hasura-admin-secret`.
pub const ADMIN_SECRET: &str = "x-hasura-admin-secret";

fn norm(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

fn starts_with_norm(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name.iter().zip(prefix).all(|(a, b)| norm(*a) == *b)
}

/// Whether a header name is an identity header: compared case-insensitively with `_` read
/// as `-`, it starts with `x-hasura-` or is `x-host-id`.
pub fn is_identity_header(name: &str) -> bool {
    let n = name.as_bytes();
    starts_with_norm(n, b"x-hasura-") || (n.len() == 9 && starts_with_norm(n, b"x-host-id"))
}

/// Whether a user's id can travel as a header value and arrive as the same string, and stay
/// distinct from every other id once a backend trims or normalises it: any characters but
/// control, format (zero-width, bidirectional overrides, BOM), line/paragraph separator and
/// noncharacters, and U+FFFD (what a lossy decoder makes of invalid bytes); no whitespace at
/// either end, which HTTP parsers and `trim()` remove (`"bob "`, `"bob\u{a0}"` would become
/// `"bob"`, someone else's id). UTF-8 travels as obs-text bytes.
pub fn is_identity_value(value: &str) -> bool {
    !value.is_empty()
        && !value.starts_with(char::is_whitespace)
        && !value.ends_with(char::is_whitespace)
        && !value
            .chars()
            .any(|c| c.is_control() || is_invisible_or_unassignable(c))
}

/// Format characters (Unicode category Cf), line and paragraph separators, noncharacters and
/// the replacement character.
fn is_invisible_or_unassignable(c: char) -> bool {
    let u = u32::from(c);
    matches!(
        u,
        0xAD
            | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x890..=0x891
            | 0x8E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x2028..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFDD0..=0xFDEF
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xFFFD
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    ) || u & 0xFFFE == 0xFFFE
}

/// Whether a value can be injected as a header value as-is: visible ASCII and inner spaces.
pub fn is_header_safe(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
}
