//! Path normalisation: idempotent, and a path it calls public under `/public` decodes to
//! something under `/public` (no dot-segment or encoding trick escapes the prefix check).
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::route::{is_public, normalize_path};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(n) = normalize_path(path) else { return };
    assert!(n.starts_with('/'));
    assert_eq!(
        normalize_path(&n).as_deref(),
        Ok(n.as_str()),
        "not idempotent: {path:?}"
    );
    assert!(
        !n.split('/').any(|s| s == "." || s == ".."),
        "dot segment left: {n}"
    );
    let prefixes = vec!["/public".to_string()];
    if is_public(&n, &prefixes) {
        assert!(
            n == "/public" || n.starts_with("/public/"),
            "{path:?} → {n}"
        );
    }
});
