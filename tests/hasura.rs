//! Hasura's three modes and forward-auth over real sockets, with a real Redis and an echo
//! upstream standing in for Hasura: what arrives upstream is exactly the identity each mode
//! promises, and nothing a client sent.

mod common;

use common::*;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

const ED_PRIVATE: &str = include_str!("fixtures/ed25519-private.pem");
const ED_PUBLIC: &str = include_str!("fixtures/ed25519-public.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/rsa-public.pem");

/// jwt mode: a new EdDSA key signs; the old RSA key (public half only) stays published.
fn jwt_toml() -> String {
    format!(
        r#"
[hasura]
mode = "jwt"
signing_kid = "ed-2026-11"
jwt_ttl_seconds = 120
jwt_issuer = "sessiongate"
jwt_audience = "hasura"
jwks_max_age_seconds = 120

[[hasura.keys]]
kid = "ed-2026-11"
algorithm = "EdDSA"
private_key = """{ED_PRIVATE}"""
public_key = """{ED_PUBLIC}"""

[[hasura.keys]]
kid = "rsa-2026-05"
algorithm = "RS256"
public_key = """{RSA_PUBLIC}"""
"#
    )
}

const SPOOF: [(&str, &str); 4] = [
    ("X-Hasura-User-Id", "evil"),
    ("x_hasura_role", "admin"),
    ("X-HASURA-ADMIN-SECRET", "guess"),
    ("x-host-id", "evil-host"),
];

fn identity_headers(r: &Resp) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    Ok(r.upstream_header_names()?
        .into_iter()
        .map(|n| n.to_ascii_lowercase().replace('_', "-"))
        .filter(|n| n.starts_with("x-hasura-") || n == "x-host-id")
        .collect())
}

#[test]
fn jwt_mode_sends_a_minted_hasura_jwt_that_verifies_against_the_jwks() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_with(echo.addr, Some(&redis.url()), &jwt_toml())?;
    let (sid, token) = gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;

    let r = authed(gw.proxy, "POST", "/v1/graphql", &token, &SPOOF, Some("{}"))?;
    assert_eq!(r.status, 200, "{}", r.body);
    // Only x-host-id of the identity headers, and it is the session's.
    assert_eq!(identity_headers(&r)?, vec!["x-host-id"]);
    assert_eq!(r.upstream_header("x-host-id")?, vec!["host-3"]);
    let auth = r.upstream_header("authorization")?;
    assert_eq!(auth.len(), 1);
    let jwt = auth[0].strip_prefix("Bearer ").ok_or("not a bearer")?;
    assert_ne!(jwt, token, "the client's token must not reach Hasura");

    // Hasura's side: fetch the JWKS, verify with the kid's key.
    let jwks = request(gw.proxy, "GET", "/.well-known/jwks.json", &[], None)?;
    assert_eq!(jwks.status, 200);
    assert_eq!(jwks.header("cache-control"), Some("public, max-age=120"));
    let set: JwkSet = serde_json::from_str(&jwks.body)?;
    assert!(
        set.find("rsa-2026-05").is_some(),
        "the old key stays published"
    );
    let header = jsonwebtoken::decode_header(jwt)?;
    assert_eq!(header.alg, Algorithm::EdDSA);
    let jwk = set
        .find(header.kid.as_deref().ok_or("no kid")?)
        .ok_or("kid not in the JWKS")?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&["sessiongate"]);
    v.set_audience(&["hasura"]);
    let claims = jsonwebtoken::decode::<Value>(jwt, &DecodingKey::from_jwk(jwk)?, &v)?.claims;
    let c = &claims["https://hasura.io/jwt/claims"];
    assert_eq!(c["x-hasura-user-id"], "user-7");
    assert_eq!(c["x-hasura-business-id"], "biz-9");
    assert_eq!(c["x-hasura-host-id"], "host-3");
    assert_eq!(c["x-hasura-default-role"], "agent");
    assert_eq!(c["x-hasura-allowed-roles"], json!(["agent"]));
    let exp = claims["exp"].as_i64().ok_or("exp")?;
    let iat = claims["iat"].as_i64().ok_or("iat")?;
    assert!(exp - iat <= 120, "short-lived: {}", exp - iat);

    // Cached per session: the next request carries the same JWT.
    let again = authed(gw.proxy, "GET", "/v1/graphql", &token, &[], None)?;
    assert_eq!(again.upstream_header("authorization")?, auth);
    // Revoked: refused at the gateway, nothing minted reaches Hasura.
    let hits = echo.hits();
    admin_request(gw.admin, "DELETE", &format!("/admin/sessions/{sid}"), None)?;
    assert_eq!(
        authed(gw.proxy, "GET", "/v1/graphql", &token, &[], None)?.status,
        401
    );
    assert_eq!(echo.hits(), hits);
    Ok(())
}

#[test]
fn webhook_mode_answers_hasuras_contract_and_forwards_the_bearer() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_with(
        echo.addr,
        Some(&redis.url()),
        "[hasura]\nmode = \"webhook\"\nwebhook_max_age_seconds = 45\n",
    )?;
    let (_, token) = gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    let expect = json!({
        "X-Hasura-User-Id": "user-7",
        "X-Hasura-Role": "agent",
        "X-Hasura-Business-Id": "biz-9",
        "X-Host-Id": "host-3",
        "Cache-Control": "max-age=45",
    });
    // GET: Hasura forwards the client's headers.
    let r = authed(gw.proxy, "GET", "/auth/hasura", &token, &[], None)?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()?, expect);
    // POST: the client's headers in the body.
    let body = json!({"headers": {"authorization": format!("Bearer {token}")}, "request": {"query": "{x}"}});
    let r = request(
        gw.proxy,
        "POST",
        "/auth/hasura",
        &[("Content-Type", "application/json")],
        Some(&body.to_string()),
    )?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()?, expect);
    // Anything else: 401 (Hasura then refuses the request).
    let body = json!({"headers": {"Authorization": "Bearer nope"}});
    let r = request(
        gw.proxy,
        "POST",
        "/auth/hasura",
        &[],
        Some(&body.to_string()),
    )?;
    assert_eq!(r.status, 401);
    assert_eq!(
        request(gw.proxy, "GET", "/auth/hasura", &[], None)?.status,
        401
    );
    // Proxied: the bearer goes on to Hasura (which asks the webhook), identity headers not.
    let r = authed(gw.proxy, "POST", "/v1/graphql", &token, &SPOOF, Some("{}"))?;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.upstream_header("authorization")?,
        vec![format!("Bearer {token}")]
    );
    assert_eq!(identity_headers(&r)?, vec!["x-host-id"]);
    assert_eq!(r.upstream_header("x-host-id")?, vec!["host-3"]);
    Ok(())
}

#[test]
fn forward_auth_answers_with_identity_headers_and_refuses_spoofing() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_with(echo.addr, Some(&redis.url()), "")?;
    let (sid, token) = gw.create_session("user-7", "biz-9", "host-3", "agent", 600)?;
    for method in ["GET", "POST", "DELETE"] {
        let r = authed(gw.proxy, method, "/auth/verify", &token, &[], None)?;
        assert_eq!(r.status, 200, "{method}: {}", r.body);
        assert_eq!(r.header("x-hasura-user-id"), Some("user-7"));
        assert_eq!(r.header("x-hasura-business-id"), Some("biz-9"));
        assert_eq!(r.header("x-hasura-role"), Some("agent"));
        assert_eq!(r.header("x-host-id"), Some("host-3"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    let r = request(gw.proxy, "GET", "/auth/verify", &[], None)?;
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    // Identity headers from the client: 403, whatever their spelling.
    for spoof in SPOOF {
        let r = authed(gw.proxy, "GET", "/auth/verify", &token, &[spoof], None)?;
        assert_eq!(r.status, 403, "{spoof:?}");
        assert!(r.header("x-hasura-user-id").is_none());
    }
    // An original URI from an untrusted peer changes nothing.
    let r = request(
        gw.proxy,
        "GET",
        "/auth/verify",
        &[("X-Original-URI", "/public/page")],
        None,
    )?;
    assert_eq!(r.status, 401);
    admin_request(gw.admin, "DELETE", &format!("/admin/sessions/{sid}"), None)?;
    assert_eq!(
        authed(gw.proxy, "GET", "/auth/verify", &token, &[], None)?.status,
        401
    );
    assert_eq!(echo.hits(), 0, "forward-auth never calls the upstream");

    // From a forward-auth peer, the one configured header's public original URI is
    // answered without authentication (and without identity); a protected one still needs
    // the bearer, and other original-URI headers are not read at all.
    let peers = |header: &str| {
        format!(
            "[forward_auth]\noriginal_uri_header = \"{header}\"\ntrusted_peers = [\"127.0.0.1\"]\n"
        )
    };
    let trusted = Gateway::start_with(echo.addr, Some(&redis.url()), &peers("x-original-uri"))?;
    let verify = |gw: &Gateway, name: &str, value: &str| {
        request(gw.proxy, "GET", "/auth/verify", &[(name, value)], None)
    };
    let r = verify(&trusted, "X-Original-URI", "/public/page?x=1")?;
    assert_eq!(r.status, 200);
    assert!(r.header("x-hasura-user-id").is_none());
    for (name, value) in [
        ("X-Original-URL", "https://api.example.com/public/a"),
        ("X-Forwarded-Uri", "/public/a"),
        ("X-Original-URI", "/v1/graphql"),
        ("X-Original-URI", "/public/../v1/graphql"),
        ("X-Original-URI", "/public/..%2Fv1/graphql"),
        ("X-Original-URI", "/publicity"),
        // nginx routes the resolved form, but passes these bytes on: not canonical, so not
        // public (a backend may route them without resolving anything).
        ("X-Original-URI", "/admin/../public/x"),
        ("X-Original-URI", "/admin/%2e%2e/public/x"),
        ("X-Original-URI", "/pub%6cic/x"),
        ("X-Original-URI", "/public/%25c0%25ae%25c0%25ae/v1"),
    ] {
        assert_eq!(
            verify(&trusted, name, value)?.status,
            401,
            "{name}: {value}"
        );
    }
    // Two values of the header: neither is believed.
    let r = request(
        trusted.proxy,
        "GET",
        "/auth/verify",
        &[
            ("X-Original-URI", "/public/a"),
            ("X-Original-URI", "/public/b"),
        ],
        None,
    )?;
    assert_eq!(r.status, 401);
    let absolute = Gateway::start_with(echo.addr, Some(&redis.url()), &peers("x-original-url"))?;
    let r = verify(
        &absolute,
        "X-Original-URL",
        "https://api.example.com/public/a",
    )?;
    assert_eq!(r.status, 200);
    assert_eq!(
        verify(&absolute, "X-Original-URI", "/public/a")?.status,
        401
    );
    // Being a trusted proxy for X-Forwarded-For is not enough.
    let proxy_only = Gateway::start_edited(echo.addr, Some(&redis.url()), "", |t| {
        t.replace("[proxy]\n", "[proxy]\ntrusted_proxies = [\"127.0.0.1\"]\n")
    })?;
    assert_eq!(
        verify(&proxy_only, "X-Original-URI", "/public/page")?.status,
        401
    );
    Ok(())
}

#[test]
fn jwt_mode_forward_auth_hands_the_hasura_jwt_to_trusted_proxies_only() -> TestResult {
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    // A client asking /auth/verify itself gets the identity, not a JWT it could keep using
    // at Hasura after a revocation.
    let direct = Gateway::start_with(echo.addr, Some(&redis.url()), &jwt_toml())?;
    let (_, token) = direct.create_session("u", "b", "h", "user", 600)?;
    let r = authed(direct.proxy, "GET", "/auth/verify", &token, &[], None)?;
    assert_eq!(r.status, 200);
    assert!(r.header("authorization").is_none());
    // A trusted proxy (X-Forwarded-For) is not a forward-auth peer: no JWT either.
    let proxy_only = Gateway::start_edited(echo.addr, Some(&redis.url()), &jwt_toml(), |t| {
        t.replace("[proxy]\n", "[proxy]\ntrusted_proxies = [\"127.0.0.1\"]\n")
    })?;
    let r = authed(proxy_only.proxy, "GET", "/auth/verify", &token, &[], None)?;
    assert_eq!(r.status, 200);
    assert!(r.header("authorization").is_none());
    let peers = format!(
        "{}\n[forward_auth]\ntrusted_peers = [\"127.0.0.1\"]\n",
        jwt_toml()
    );
    let gw = Gateway::start_with(echo.addr, Some(&redis.url()), &peers)?;
    let r = authed(gw.proxy, "GET", "/auth/verify", &token, &[], None)?;
    assert_eq!(r.status, 200);
    let jwt = r
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .ok_or("no Hasura JWT")?;
    assert_eq!(
        jsonwebtoken::decode_header(jwt)?.kid.as_deref(),
        Some("ed-2026-11")
    );
    Ok(())
}

#[test]
fn mode_and_keys_are_validated_at_start() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.toml");
    let base = config_text(1, 2, "127.0.0.1:3".parse()?, None, "");
    for (extra, key) in [
        ("[hasura]\nmode = \"jwks\"\n", "hasura.mode"),
        ("[hasura]\nmode = \"jwt\"\n", "hasura.signing_kid"),
        (
            "[hasura]\nmode = \"jwt\"\nsigning_kid = \"k\"\n[[hasura.keys]]\nkid = \"k\"\nalgorithm = \"HS256\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
            "hasura.keys[0].algorithm",
        ),
    ] {
        std::fs::write(&path, format!("{base}\n{extra}"))?;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiongate"))
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(key), "{key} not named in: {stderr}");
    }
    Ok(())
}
