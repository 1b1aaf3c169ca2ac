//! Live responses against docs/openapi.yaml: real gateways (jwt mode with the three
//! dialects; webhook mode) on a real Redis answer every documented operation, and each
//! answer's status must be documented for that operation, its JSON body must validate
//! against the documented schema (JSON Schema 2020-12), and its documented required headers
//! must be present. Every documented operation must be exercised at least once.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

const MOTTASL: &str = "live-mottasl-token";
const AMITY: &str = "live-amity-key";
const AMITY_SECURE: &str = "live-amity-secure-key";
const AMITY_SERVER: &str = "live-amity-server-key";
const RAPIDLY: &str = "live-rapidly-token";
const BUSINESS: &str = "550e8400-e29b-41d4-a716-446655440000";
const CUSTOMER: &str = "7b0c7c6e-6f1d-4c3e-9a57-2f1e4d8b9c01";

type Error = Box<dyn std::error::Error>;

fn spec() -> Result<Value, Error> {
    let text = std::fs::read_to_string(repo_path("docs/openapi.yaml"))?;
    Ok(serde_yaml_ng::from_str(&text)?)
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> Result<&'a Value, Error> {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').ok_or("non-local $ref")?;
            doc.pointer(pointer)
                .ok_or_else(|| format!("dangling {r}").into())
        }
        None => Ok(v),
    }
}

struct Checker {
    doc: Value,
    seen: BTreeSet<(String, String)>,
}

impl Checker {
    /// Validates `r`, the answer to `method path_template`.
    fn check(&mut self, method: &str, template: &str, r: &Resp) -> Result<(), Error> {
        let at = format!("{method} {template} → {}", r.status);
        let item = self.doc["paths"]
            .get(template)
            .ok_or_else(|| format!("{at}: path not documented"))?;
        let op = resolve(&self.doc, item)?
            .get(method.to_ascii_lowercase())
            .ok_or_else(|| format!("{at}: method not documented"))?;
        let response = op["responses"]
            .get(r.status.to_string())
            .ok_or_else(|| format!("{at}: status not documented: {}", r.body))?;
        let response = resolve(&self.doc, response)?;
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for (name, _) in headers {
                // Documented response headers the gateway always sets.
                if ["Retry-After", "WWW-Authenticate", "Allow", "x-request-id"]
                    .contains(&name.as_str())
                {
                    assert!(r.header(name).is_some(), "{at}: header {name} missing");
                }
            }
        }
        match response.pointer("/content/application~1json/schema") {
            Some(schema) => {
                let body: Value = serde_json::from_str(&r.body)
                    .map_err(|e| format!("{at}: not JSON ({e}): {}", r.body))?;
                let mut root = json!({"allOf": [schema]});
                root["components"] = self.doc["components"].clone();
                let validator = jsonschema::draft202012::new(&root)
                    .map_err(|e| format!("{at}: bad schema: {e}"))?;
                let errors: Vec<String> = validator
                    .iter_errors(&body)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                assert!(errors.is_empty(), "{at}: {errors:?}\n{body}");
            }
            None => {
                if let Some(kinds) = response.get("content").and_then(Value::as_object) {
                    let ct = r.header("content-type").unwrap_or_default();
                    assert!(
                        kinds.keys().any(|k| ct.starts_with(k.as_str())),
                        "{at}: content-type {ct} not among {:?}",
                        kinds.keys().collect::<Vec<_>>()
                    );
                }
            }
        }
        self.seen.insert((method.to_string(), template.to_string()));
        Ok(())
    }

    fn documented(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        if let Some(paths) = self.doc["paths"].as_object() {
            for (p, item) in paths {
                for m in ["get", "put", "post", "delete", "patch"] {
                    if item.get(m).is_some() {
                        all.insert((m.to_uppercase(), p.clone()));
                    }
                }
            }
        }
        all
    }
}

fn jwt_and_dialects() -> String {
    let ed_private = include_str!("fixtures/ed25519-private.pem");
    let ed_public = include_str!("fixtures/ed25519-public.pem");
    format!(
        r#"
[hasura]
mode = "jwt"
signing_kid = "h1"
[[hasura.keys]]
kid = "h1"
algorithm = "EdDSA"
private_key = """{ed_private}"""
public_key = """{ed_public}"""

[rate_limits]
create_per_credential = 0
refresh_per_session = 2

[[dialects.mottasl.credentials]]
token = "{MOTTASL}"
businesses = ["{BUSINESS}"]
roles = ["admin", "user"]
default_host_id = "h"
session_rate_limit = 2

[[dialects.amity.networks]]
network_id = "net-1"
api_key = "{AMITY}"
default_host_id = "h"

[[dialects.amity.networks]]
network_id = "net-secure"
api_key = "{AMITY_SECURE}"
secure = true
server_key = "{AMITY_SERVER}"
default_host_id = "h"

[[dialects.rapidly.workspaces]]
workspace_id = "ws-1"
token = "{RAPIDLY}"
default_host_id = "h"
portal_base_url = "https://portal.example/ws-1"

[[dialects.rapidly.customers]]
id = "{CUSTOMER}"
workspace_id = "ws-1"
email = "c@example.com"
"#
    )
}

fn post(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &Value) -> Result<Resp, Error> {
    let mut h = vec![("Content-Type", "application/json")];
    h.extend_from_slice(headers);
    request(gw.proxy, "POST", path, &h, Some(&body.to_string()))
}

#[test]
fn every_operation_answers_as_documented() -> TestResult {
    let mut c = Checker {
        doc: spec()?,
        seen: BTreeSet::new(),
    };
    let redis = Redis::start()?;
    let echo = echo::Echo::start()?;
    let gw = Gateway::start_with(echo.addr, Some(&redis.url()), &jwt_and_dialects())?;
    let bearer = |t: &str| format!("Bearer {t}");

    // Mottasl.
    let m = "/v1/app/user.new.session";
    let body = json!({
        "business_id": BUSINESS, "platform_type": "web", "platform_id": "1", "role": "user",
        "profile_name": "p", "display_name": "d", "profile_image_url": "https://e.x/p.png"
    });
    let auth = bearer(MOTTASL);
    c.check(
        "POST",
        m,
        &post(&gw, m, &[("Authorization", &auth)], &body)?,
    )?;
    c.check("POST", m, &post(&gw, m, &[], &body)?)?;
    c.check(
        "POST",
        m,
        &post(
            &gw,
            m,
            &[("Authorization", &auth)],
            &json!({"role": "user"}),
        )?,
    )?;
    let r = post(&gw, m, &[("Authorization", &auth)], &body)?;
    assert_eq!(r.status, 429, "the credential's limit of 2");
    c.check("POST", m, &r)?;
    // A wrong method is answered under the path's one operation.
    c.check(
        "POST",
        m,
        &request(gw.proxy, "GET", m, &[("Authorization", &auth)], None)?,
    )?;

    // Amity.
    for v in ["v3", "v4", "v5"] {
        let p = format!("/api/{v}/sessions");
        let b = json!({"userId": format!("user-{v}"), "deviceId": format!("d-{v}")});
        c.check("POST", &p, &post(&gw, &p, &[("x-api-key", AMITY)], &b)?)?;
        c.check("POST", &p, &post(&gw, &p, &[("x-api-key", "wrong")], &b)?)?;
    }
    let p = "/api/v3/authentication/token?userId=sec-user";
    c.check(
        "GET",
        "/api/v3/authentication/token",
        &request(gw.proxy, "GET", p, &[("x-server-key", AMITY_SERVER)], None)?,
    )?;
    c.check(
        "POST",
        "/api/v4/authentication/token",
        &post(
            &gw,
            "/api/v4/authentication/token",
            &[("x-server-key", AMITY_SERVER)],
            &json!({"userId": "u"}),
        )?,
    )?;
    c.check(
        "GET",
        "/api/v3/network-settings/chat",
        &request(
            gw.proxy,
            "GET",
            "/api/v3/network-settings/chat",
            &[("x-api-key", AMITY)],
            None,
        )?,
    )?;

    // Rapidly.
    let auth = bearer(RAPIDLY);
    for p in ["/api/customer-sessions/", "/api/customer-sessions"] {
        c.check(
            "POST",
            p,
            &post(
                &gw,
                p,
                &[("Authorization", &auth)],
                &json!({"customer_id": CUSTOMER}),
            )?,
        )?;
        c.check(
            "POST",
            p,
            &post(&gw, p, &[("Authorization", &auth)], &json!({}))?,
        )?;
        c.check(
            "POST",
            p,
            &post(&gw, p, &[], &json!({"customer_id": CUSTOMER}))?,
        )?;
    }

    // Admin, and the gateway's own API with the session it creates.
    let a = gw.admin;
    c.check(
        "GET",
        "/healthz",
        &request(a, "GET", "/healthz", &[], None)?,
    )?;
    c.check("GET", "/readyz", &request(a, "GET", "/readyz", &[], None)?)?;
    c.check(
        "GET",
        "/metrics",
        &request(a, "GET", "/metrics", &[], None)?,
    )?;
    let create = json!({"user_id": "u1", "business_id": "b1", "host_id": "h1", "role": "user"});
    let r = admin_request(a, "POST", "/admin/sessions", Some(&create.to_string()))?;
    c.check("POST", "/admin/sessions", &r)?;
    let created = r.json()?;
    let sid = created["session_id"]
        .as_str()
        .ok_or("session_id")?
        .to_string();
    let refresh = created["refresh_token"]
        .as_str()
        .ok_or("refresh_token")?
        .to_string();
    c.check(
        "POST",
        "/admin/sessions",
        &admin_request(a, "POST", "/admin/sessions", Some("{}"))?,
    )?;
    c.check(
        "POST",
        "/admin/sessions",
        &request(a, "POST", "/admin/sessions", &[], Some("{}"))?,
    )?;
    let s = "/admin/sessions/{session_id}";
    c.check(
        "GET",
        s,
        &admin_request(a, "GET", &format!("/admin/sessions/{sid}"), None)?,
    )?;
    c.check(
        "GET",
        s,
        &admin_request(a, "GET", "/admin/sessions/nope", None)?,
    )?;

    let r = post(
        &gw,
        "/auth/refresh",
        &[],
        &json!({"refresh_token": refresh}),
    )?;
    c.check("POST", "/auth/refresh", &r)?;
    let next = r.json()?["refresh_token"]
        .as_str()
        .ok_or("refresh_token")?
        .to_string();
    c.check(
        "POST",
        "/auth/refresh",
        &post(&gw, "/auth/refresh", &[], &json!({}))?,
    )?;
    c.check(
        "POST",
        "/auth/refresh",
        &post(&gw, "/auth/refresh", &[], &json!({"refresh_token": "x.y"}))?,
    )?;
    let r = post(&gw, "/auth/refresh", &[], &json!({"refresh_token": next}))?;
    c.check("POST", "/auth/refresh", &r)?;
    let current = r.json()?["refresh_token"]
        .as_str()
        .ok_or("refresh_token")?
        .to_string();
    // The session's third refresh within the window (a spent token would be reuse instead).
    let r = post(
        &gw,
        "/auth/refresh",
        &[],
        &json!({"refresh_token": current}),
    )?;
    assert_eq!(r.status, 429, "refresh_per_session = 2");
    c.check("POST", "/auth/refresh", &r)?;

    let (_, live) = gw.create_session("u2", "b2", "h2", "user", 600)?;
    for m in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
        c.check(
            m,
            "/auth/verify",
            &authed(gw.proxy, m, "/auth/verify", &live, &[], None)?,
        )?;
    }
    c.check(
        "GET",
        "/auth/verify",
        &request(gw.proxy, "GET", "/auth/verify", &[], None)?,
    )?;
    c.check(
        "GET",
        "/auth/verify",
        &authed(
            gw.proxy,
            "GET",
            "/auth/verify",
            &live,
            &[("X-Hasura-Role", "admin")],
            None,
        )?,
    )?;
    c.check(
        "GET",
        "/.well-known/jwks.json",
        &request(gw.proxy, "GET", "/.well-known/jwks.json", &[], None)?,
    )?;
    // Self-service sessions: list, end one (and someone else's: 404), end the others.
    let (_, mine) = gw.create_session("ss", "b1", "h1", "user", 600)?;
    let (other_sid, _) = gw.create_session("ss", "b1", "h1", "user", 600)?;
    let (foreign, _) = gw.create_session("not-ss", "b1", "h1", "user", 600)?;
    c.check(
        "GET",
        "/auth/sessions",
        &authed(gw.proxy, "GET", "/auth/sessions", &mine, &[], None)?,
    )?;
    c.check(
        "GET",
        "/auth/sessions",
        &request(gw.proxy, "GET", "/auth/sessions", &[], None)?,
    )?;
    c.check(
        "GET",
        "/auth/sessions",
        &authed(gw.proxy, "PUT", "/auth/sessions", &mine, &[], None)?,
    )?;
    let one = "/auth/sessions/{session_id}";
    c.check(
        "DELETE",
        one,
        &authed(
            gw.proxy,
            "DELETE",
            &format!("/auth/sessions/{foreign}"),
            &mine,
            &[],
            None,
        )?,
    )?;
    c.check(
        "DELETE",
        one,
        &authed(
            gw.proxy,
            "DELETE",
            &format!("/auth/sessions/{other_sid}"),
            &mine,
            &[],
            None,
        )?,
    )?;
    c.check(
        "DELETE",
        one,
        &authed(
            gw.proxy,
            "GET",
            &format!("/auth/sessions/{other_sid}"),
            &mine,
            &[],
            None,
        )?,
    )?;
    c.check(
        "DELETE",
        "/auth/sessions",
        &authed(gw.proxy, "DELETE", "/auth/sessions", &mine, &[], None)?,
    )?;
    c.check(
        "DELETE",
        "/auth/sessions",
        &request(gw.proxy, "DELETE", "/auth/sessions", &[], None)?,
    )?;
    c.check(
        "GET",
        "/admin/users/{user_id}/sessions",
        &admin_request(gw.admin, "GET", "/admin/users/ss/sessions", None)?,
    )?;
    c.check(
        "GET",
        "/admin/users/{user_id}/sessions",
        &admin_request(gw.admin, "GET", "/admin/users/a%00b/sessions", None)?,
    )?;
    c.check(
        "POST",
        "/auth/logout",
        &authed(gw.proxy, "POST", "/auth/logout", &live, &[], None)?,
    )?;
    c.check(
        "POST",
        "/auth/logout",
        &authed(gw.proxy, "POST", "/auth/logout", &live, &[], None)?,
    )?;
    c.check(
        "POST",
        "/auth/logout",
        &request(gw.proxy, "GET", "/auth/logout", &[], None)?,
    )?;

    c.check(
        "DELETE",
        s,
        &admin_request(a, "DELETE", &format!("/admin/sessions/{sid}"), None)?,
    )?;
    c.check(
        "DELETE",
        s,
        &admin_request(a, "DELETE", &format!("/admin/sessions/{sid}"), None)?,
    )?;
    c.check(
        "DELETE",
        "/admin/users/{user_id}/sessions",
        &admin_request(a, "DELETE", "/admin/users/u1/sessions", None)?,
    )?;
    c.check(
        "DELETE",
        "/admin/businesses/{business_id}/sessions",
        &admin_request(a, "DELETE", "/admin/businesses/b1/sessions", None)?,
    )?;
    let cust = "/admin/customers/{id}";
    let id = "3f1e2d4c-5b6a-4798-8a7b-6c5d4e3f2a1b";
    let cp = format!("/admin/customers/{id}");
    let body = json!({"workspace_id": "ws-1", "email": "n@example.com", "name": "N"}).to_string();
    c.check("PUT", cust, &admin_request(a, "PUT", &cp, Some(&body))?)?;
    c.check(
        "PUT",
        cust,
        &admin_request(a, "PUT", &cp, Some("{\"email\": 3}"))?,
    )?;
    c.check("GET", cust, &admin_request(a, "GET", &cp, None)?)?;
    c.check("DELETE", cust, &admin_request(a, "DELETE", &cp, None)?)?;
    c.check(
        "GET",
        cust,
        &admin_request(a, "GET", "/admin/customers/not-a-uuid", None)?,
    )?;

    // Webhook mode serves /auth/hasura.
    let hook = Gateway::start_with(
        echo.addr,
        Some(&redis.url()),
        "[hasura]\nmode = \"webhook\"\n",
    )?;
    let (_, t) = hook.create_session("u3", "b3", "h3", "user", 600)?;
    c.check(
        "GET",
        "/auth/hasura",
        &authed(hook.proxy, "GET", "/auth/hasura", &t, &[], None)?,
    )?;
    c.check(
        "GET",
        "/auth/hasura",
        &request(hook.proxy, "GET", "/auth/hasura", &[], None)?,
    )?;
    let b = json!({"headers": {"Authorization": bearer(&t)}, "request": {}});
    c.check(
        "POST",
        "/auth/hasura",
        &post(&hook, "/auth/hasura", &[], &b)?,
    )?;
    c.check(
        "POST",
        "/auth/hasura",
        &request(hook.proxy, "POST", "/auth/hasura", &[], Some("nope"))?,
    )?;

    let missing: Vec<_> = c.documented().difference(&c.seen).cloned().collect();
    assert!(
        missing.is_empty(),
        "documented but never exercised: {missing:?}"
    );
    Ok(())
}
