//! Bearer extraction and JWT verification: no panic, and nothing is accepted that the
//! configured HS256 key did not sign (the fuzzer cannot forge the MAC; `alg: none`,
//! algorithm swaps and unknown kids must all fail). The session a token claims, read
//! unchecked as a cache hint, is a well-formed session id or nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::auth::{bearer_token, KeySet};
use sessiongate::session::claimed_session;
use sessiongate::config::Config;
use std::collections::HashMap;
use std::sync::OnceLock;

const CONFIG: &str = r#"
[tokens]
signing_kid = "k"
[[tokens.keys]]
kid = "k"
algorithm = "HS256"
secret = "fuzz-secret-of-at-least-thirty-two-bytes"
[admin]
token = "fuzz-admin-token-0123"
"#;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        let cfg = Config::from_toml(CONFIG, &HashMap::<String, String>::new()).expect("config");
        KeySet::new(&cfg.tokens).expect("keys")
    })
}

fuzz_target!(|data: &[u8]| {
    let token = bearer_token(data)
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(data).into_owned());
    if let Some(hint) = claimed_session(&token) {
        assert!(sessiongate::session::model::is_valid_session_id(hint.as_str()));
    }
    if let Ok(claims) = keys().verify(&token) {
        // Only reachable with a real signature: the fuzzer would have had to find the MAC.
        panic!("accepted a token the key did not sign: {claims:?}");
    }
});
