//! Identity-header rewriting: after `rewrite`, the only headers whose normalised name is
//! `x-hasura-*` or `x-host-id` are the injected ones, with the session's values.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;
use sessiongate::config::Config;
use sessiongate::hasura::Hasura;
use sessiongate::headers::{is_identity_header, rewrite};
use std::sync::OnceLock;

/// The default configuration's Hasura identity (headers mode).
fn hasura() -> Option<&'static Hasura> {
    static HASURA: OnceLock<Option<Hasura>> = OnceLock::new();
    HASURA
        .get_or_init(|| {
            let text = include_str!("../../config/sessiongate.toml");
            let env = std::collections::HashMap::<String, String>::new();
            let cfg = Config::from_toml(text, &env).ok()?;
            Hasura::new(&cfg, 10).ok()
        })
        .as_ref()
}
use sessiongate::session::model::Session;

fuzz_target!(|data: &[u8]| {
    let Ok(mut req) = RequestHeader::build("GET", b"/v1/graphql", None) else {
        return;
    };
    // Lines of `name: value` (or `name` alone) from the input.
    for line in data.split(|b| *b == b'\n') {
        let (name, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (line, &b""[..]),
        };
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name),
            http::HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        let _ = req.append_header(name, value);
    }
    let session = Session {
        session_id: "s".into(),
        user_id: "user-1".into(),
        business_id: "biz-1".into(),
        host_id: "host-1".into(),
        role: "agent".into(),
        created_at: 0,
        expires_at: i64::MAX,
        source: "fuzz".into(),
        external_id: None,
        user_gen: 0,
        business_gen: 0,
        user_agent: None,
        ip: None,
    };
    let with_session = data.first().is_some_and(|b| b & 1 == 1);
    let Some(hasura) = hasura() else {
        panic!("the default configuration does not load");
    };
    let identity = match hasura.identity_for(&session, "token") {
        Ok(i) => i,
        Err(e) => panic!("{e}"),
    };
    if rewrite(&mut req, with_session.then_some(&identity), "fuzz-request-id").is_err() {
        return;
    }
    // The gateway's request id, once, whatever the client sent.
    let ids: Vec<_> = req.headers.get_all("x-request-id").iter().collect();
    assert_eq!(ids, ["fuzz-request-id"]);
    let expected = [
        ("x-hasura-user-id", "user-1"),
        ("x-hasura-business-id", "biz-1"),
        ("x-hasura-role", "agent"),
        ("x-host-id", "host-1"),
    ];
    for (name, value) in req.headers.iter() {
        if is_identity_header(name.as_str()) {
            assert!(with_session, "client identity header survived: {name}");
            let want = expected.iter().find(|(n, _)| *n == name.as_str());
            assert_eq!(
                want.map(|(_, v)| v.as_bytes()),
                Some(value.as_bytes()),
                "{name}"
            );
        }
    }
    if with_session {
        for (name, value) in expected {
            assert_eq!(req.headers.get_all(name).iter().count(), 1, "{name}");
            assert_eq!(
                req.headers.get(name).map(|v| v.as_bytes()),
                Some(value.as_bytes())
            );
        }
    }
});
