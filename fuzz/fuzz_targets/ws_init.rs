//! connection_init rewriting: whatever the client sent, no identity key and no Authorization
//! survives in `payload` or `payload.headers` other than the ones the gateway sets.
//! Strict parsing (every client message on a GraphQL socket): whatever it accepts, serde_json
//! (last duplicate wins) reads the same, and re-serialised it has no duplicate to differ on;
//! whatever serde_json cannot read, it refuses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::headers::is_identity_header;
use sessiongate::json::{strict_object, strict_value, StrictError};
use sessiongate::ws::init::Init;

const SET: [(&str, &str); 3] = [
    ("x-hasura-user-id", "u1"),
    ("x-host-id", "h1"),
    ("Authorization", "Bearer minted"),
];

fuzz_target!(|data: &[u8]| {
    let loose = serde_json::from_slice::<serde_json::Value>(data);
    match strict_value(data) {
        Ok(v) => {
            assert_eq!(Some(&v), loose.as_ref().ok(), "strict and loose differ");
            // Its canonical text parses strictly too. (Not compared for equality: serde_json's
            // float printing does not round-trip every f64, and the relay forwards the
            // client's own bytes, never a re-serialisation.)
            assert!(strict_value(v.to_string().as_bytes()).is_ok(), "canonical text refused");
        }
        Err(StrictError::Syntax) => assert!(loose.is_err(), "strict refused valid JSON"),
        // Refused at the first duplicate, whatever follows.
        Err(StrictError::DuplicateKey) => {}
        Err(StrictError::NotObject) => panic!("strict_value takes any value"),
    }
    let Ok(init) = Init::parse(data) else { return };
    assert!(strict_object(data).is_ok(), "an init that is not strict JSON was accepted");
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
