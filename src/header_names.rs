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

/// Whether a value can be injected as a header value as-is: visible ASCII and inner spaces.
pub fn is_header_safe(value: &str) -> bool {
    !value.is_empty()
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && !value.starts_with(' ')
        && !value.ends_with(' ')
}
