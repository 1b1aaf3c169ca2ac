//! Config loading: any text is either a config or a list of problems naming keys; never a
//! panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::config::Config;
use std::collections::HashMap;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `{ file = ... }` secrets and TLS files read paths; a fuzzer naming /dev/zero would
    // measure the filesystem, not the parser.
    if text.to_ascii_lowercase().contains("file") {
        return;
    }
    match Config::from_toml(text, &HashMap::<String, String>::new()) {
        Ok(_) => {}
        Err(e) => assert!(!e.0.is_empty() && e.0.iter().all(|i| !i.key.is_empty())),
    }
});
