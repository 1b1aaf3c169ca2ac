//! Path normalisation: idempotent, and a path it calls public under `/public` decodes to
//! something under `/public` (no dot-segment or encoding trick escapes the prefix check).
//! With the ambiguity rule (`proxy.ambiguous_paths = "reject"`): a path the gateway lets
//! through as public is public to a lenient backend too — one that decodes percent-encodings
//! (repeatedly), treats `\` as `/`, strips `;` parameters and then resolves dot segments.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::path::{ambiguity, is_public, normalize_path, public_as_proxied};

/// Percent-decodes every `%XX` once.
fn decode(b: &[u8]) -> Vec<u8> {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Where a lenient backend routes a raw path.
fn lenient(path: &str) -> Vec<Vec<u8>> {
    let mut b = path.as_bytes().to_vec();
    for _ in 0..8 {
        let next = decode(&b);
        if next == b {
            break;
        }
        b = next;
    }
    let b: Vec<u8> = b.iter().map(|&c| if c == b'\\' { b'/' } else { c }).collect();
    let mut out: Vec<Vec<u8>> = Vec::new();
    for seg in b.split(|&c| c == b'/').skip(1) {
        let seg = seg.split(|&c| c == b';').next().unwrap_or_default();
        match seg {
            b"." => {}
            b".." => {
                out.pop();
            }
            s => out.push(s.to_vec()),
        }
    }
    out
}

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
        if ambiguity(path).is_none() {
            // What goes upstream is the normalised path; the raw one too, for good measure.
            for sent in [n.as_str(), path] {
                let backend = lenient(sent);
                assert_eq!(
                    backend.first().map(Vec::as_slice),
                    Some(&b"public"[..]),
                    "public to the gateway, {backend:?} to a lenient backend: {path:?}"
                );
            }
        }
    }
    // Forward-auth never calls a path public that the gateway itself would not.
    if public_as_proxied(path, &prefixes) {
        assert!(ambiguity(path).is_none() && is_public(&n, &prefixes), "{path:?}");
    }
});
