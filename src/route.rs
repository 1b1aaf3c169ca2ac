//! Request routing: the canonical path ([`crate::path`]) decides public vs protected, and
//! that same form is what goes upstream, so the check and the upstream cannot disagree.

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

/// Routes a normalised path.
pub fn route(path: &str, public_prefixes: &[String]) -> Route {
    if crate::path::is_public(path, public_prefixes) {
        Route::Public
    } else {
        Route::Protected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::{is_public, normalize_path};

    fn n(p: &str) -> String {
        normalize_path(p).unwrap_or_else(|e| format!("ERR {e}"))
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
