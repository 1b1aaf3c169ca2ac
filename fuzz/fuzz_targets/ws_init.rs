//! connection_init rewriting: whatever the client sent, no identity key and no Authorization
//! survives in `payload` or `payload.headers` other than the ones the gateway sets.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::headers::is_identity_header;
use sessiongate::ws::init::Init;

const SET: [(&str, &str); 3] = [
    ("x-hasura-user-id", "u1"),
    ("x-host-id", "h1"),
    ("Authorization", "Bearer minted"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(init) = Init::parse(data) else { return };
    let _ = init.authorization();
    let out = init.rewrite(&SET);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("rewrite emits JSON");
    assert_eq!(v["type"], "connection_init");
    let payload = v["payload"].as_object().expect("payload is an object");
    for (k, _) in payload {
        assert!(
            !is_identity_header(k) && !k.eq_ignore_ascii_case("authorization"),
            "{k}"
        );
    }
    let headers = payload["headers"]
        .as_object()
        .expect("headers is an object");
    for (k, val) in headers {
        if is_identity_header(k) || k.eq_ignore_ascii_case("authorization") {
            let ours = SET.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
            assert_eq!(val.as_str(), ours, "{k}");
        }
    }
});
