//! docs/openapi.yaml against the implementation: exactly the operations the gateway answers
//! (`endpoint::for_path`, the admin API, health), request limits as `parse()` enforces
//! them, each dialect's error shapes, and success schemas and examples that match the golden
//! fixtures the dialects' unit tests render (tests/fixtures/dialects/).

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// What `endpoint::for_path` answers on the proxy listener (`/auth/verify` answers any
/// method; the usual ones are documented).
const PROXY_OPERATIONS: [(&str, &str); 22] = [
    ("POST", "/auth/refresh"),
    ("POST", "/auth/logout"),
    ("GET", "/auth/sessions"),
    ("DELETE", "/auth/sessions"),
    ("DELETE", "/auth/sessions/{session_id}"),
    ("GET", "/auth/verify"),
    ("POST", "/auth/verify"),
    ("PUT", "/auth/verify"),
    ("DELETE", "/auth/verify"),
    ("PATCH", "/auth/verify"),
    ("GET", "/auth/hasura"),
    ("POST", "/auth/hasura"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/v1/app/user.new.session"),
    ("POST", "/api/v3/sessions"),
    ("POST", "/api/v4/sessions"),
    ("POST", "/api/v5/sessions"),
    ("GET", "/api/v3/authentication/token"),
    ("POST", "/api/v4/authentication/token"),
    ("GET", "/api/v3/network-settings/chat"),
    ("POST", "/api/customer-sessions/"),
    ("POST", "/api/customer-sessions"),
];

/// What `AdminApp` answers on the admin listener.
const ADMIN_OPERATIONS: [(&str, &str); 12] = [
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/admin/sessions"),
    ("GET", "/admin/sessions/{session_id}"),
    ("DELETE", "/admin/sessions/{session_id}"),
    ("GET", "/admin/users/{user_id}/sessions"),
    ("DELETE", "/admin/users/{user_id}/sessions"),
    ("DELETE", "/admin/businesses/{business_id}/sessions"),
    ("PUT", "/admin/customers/{id}"),
    ("GET", "/admin/customers/{id}"),
    ("DELETE", "/admin/customers/{id}"),
];

const PROXY_SERVER: &str = "http://127.0.0.1:8080";
const ADMIN_SERVER: &str = "http://127.0.0.1:9090";

/// The operation keys of an OpenAPI path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// One dialect's session-creation operation and its golden fixtures.
struct Golden {
    dialect: &'static str,
    /// Every path of the operation (all POST).
    paths: &'static [&'static str],
    /// Status of the success response.
    success: &'static str,
    /// What `parse()` requires.
    request_required: &'static [&'static str],
    /// Nested objects of the response fixture whose keys must be checked too.
    nested: &'static [&'static str],
}

const GOLDEN: [Golden; 3] = [
    Golden {
        dialect: "mottasl",
        paths: &["/v1/app/user.new.session"],
        success: "200",
        request_required: &[
            "business_id",
            "platform_type",
            "platform_id",
            "role",
            "profile_name",
            "display_name",
            "profile_image_url",
        ],
        nested: &["headers", "user_details"],
    },
    Golden {
        dialect: "amity",
        paths: &["/api/v3/sessions", "/api/v4/sessions", "/api/v5/sessions"],
        success: "200",
        request_required: &["userId", "deviceId"],
        nested: &["users[]", "roles[]", "users[].hashFlag"],
    },
    Golden {
        dialect: "rapidly",
        paths: &["/api/customer-sessions/", "/api/customer-sessions"],
        success: "201",
        // A union: `customer_id` or `external_customer_id` (the schema's anyOf).
        request_required: &[],
        nested: &["customer"],
    },
];

fn read_json(relative: &str) -> Result<Value, Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not valid JSON: {e}", path.display()))?;
    Ok(value)
}

fn openapi() -> Result<Value, Box<dyn std::error::Error>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| format!("{} is not valid YAML: {e}", path.display()))?;
    Ok(value)
}

fn fixture(dialect: &str, name: &str) -> Result<Value, Box<dyn std::error::Error>> {
    read_json(&format!("tests/fixtures/dialects/{dialect}/{name}.json"))
}

/// Follows `$ref`s (local JSON pointers such as `#/components/schemas/X`) to the value.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> Result<&'a Value, String> {
    let mut v = value;
    for _ in 0..32 {
        let Some(r) = v.get("$ref") else {
            return Ok(v);
        };
        let r = r.as_str().ok_or("a $ref must be a string")?;
        let pointer = r
            .strip_prefix('#')
            .ok_or_else(|| format!("{r}: only references within the document are supported"))?;
        v = doc
            .pointer(pointer)
            .ok_or_else(|| format!("{r}: the reference points at nothing"))?;
    }
    Err(format!("{value}: reference chain too long"))
}

/// `value[key]`, references resolved, or an error naming where.
fn member<'a>(doc: &'a Value, value: &'a Value, key: &str, at: &str) -> Result<&'a Value, String> {
    let v = value
        .get(key)
        .ok_or_else(|| format!("{at}: `{key}` is missing"))?;
    resolve(doc, v)
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Result<&'a Value, String> {
    let paths = member(doc, doc, "paths", "document")?;
    let item = member(doc, paths, path, "paths")?;
    member(doc, item, &method.to_lowercase(), path)
}

/// The media type object of a response (or request body) of an operation.
fn media<'a>(
    doc: &'a Value,
    holder: &'a Value,
    content_type: &str,
    at: &str,
) -> Result<&'a Value, String> {
    let content = member(doc, holder, "content", at)?;
    member(doc, content, content_type, at)
}

fn response<'a>(
    doc: &'a Value,
    op: &'a Value,
    status: &str,
    at: &str,
) -> Result<&'a Value, String> {
    let responses = member(doc, op, "responses", at)?;
    member(doc, responses, status, &format!("{at} responses"))
}

fn json_schema<'a>(doc: &'a Value, holder: &'a Value, at: &str) -> Result<&'a Value, String> {
    let m = media(doc, holder, "application/json", at)?;
    member(doc, m, "schema", at)
}

fn strings(value: Option<&Value>) -> BTreeSet<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

/// `schema` (an object schema) against `fixture` (an object): `required` equals the fixture's
/// keys, every key is a declared property, and the same for nested non-empty objects and
/// arrays of objects. Records the nested places it checked in `visited`.
fn check_object(
    doc: &Value,
    schema: &Value,
    fixture: &Value,
    at: &str,
    visited: &mut BTreeSet<String>,
) -> TestResult {
    let schema = resolve(doc, schema)?;
    let fields = fixture
        .as_object()
        .ok_or_else(|| format!("{at}: the fixture is not an object"))?;
    let keys: BTreeSet<String> = fields.keys().cloned().collect();
    let required = strings(schema.get("required"));
    if required != keys {
        let where_ = if at.is_empty() { "top level" } else { at };
        let missing: Vec<_> = keys.difference(&required).collect();
        let extra: Vec<_> = required.difference(&keys).collect();
        return Err(format!(
            "`{where_}`: `required` lacks {missing:?} of the golden fixture's keys \
             and requires {extra:?} that the fixture does not have"
        )
        .into());
    }
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("`{at}`: the schema declares no properties"))?;
    for (key, value) in fields {
        let here = join(at, key);
        let prop = props
            .get(key)
            .ok_or_else(|| format!("`{here}` is in the golden fixture but not in `properties`"))?;
        match value {
            Value::Object(m) if !m.is_empty() => {
                check_object(doc, prop, value, &here, visited)?;
                visited.insert(here);
            }
            Value::Array(items)
                if items
                    .iter()
                    .any(|i| i.as_object().is_some_and(|m| !m.is_empty())) =>
            {
                let here = format!("{here}[]");
                let items_schema = member(doc, resolve(doc, prop)?, "items", &here)?;
                for item in items {
                    check_object(doc, items_schema, item, &here, visited)?;
                }
                visited.insert(here);
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn operations_are_exactly_what_the_gateway_answers() -> TestResult {
    let doc = openapi()?;
    let paths = doc
        .get("paths")
        .and_then(Value::as_object)
        .ok_or("the document has no `paths` object")?;
    let mut found = BTreeSet::new();
    for (path, item) in paths {
        let item = resolve(&doc, item)?;
        for m in METHODS {
            if item.get(m).is_some() {
                found.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    let want: BTreeSet<(String, String)> = PROXY_OPERATIONS
        .iter()
        .chain(ADMIN_OPERATIONS.iter())
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let missing: Vec<_> = want.difference(&found).collect();
    let unknown: Vec<_> = found.difference(&want).collect();
    assert!(
        missing.is_empty() && unknown.is_empty(),
        "the documented operations differ from endpoint::for_path and the admin customers API: \
         undocumented {missing:?}, documented but not answered {unknown:?}"
    );

    let urls = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|s| {
                s.iter()
                    .filter_map(|x| x.get("url").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(
        urls(doc.get("servers")),
        vec![PROXY_SERVER.to_string()],
        "the top-level server must be the proxy listener"
    );
    for (method, path) in PROXY_OPERATIONS {
        let item = member(&doc, &doc["paths"], path, "paths")?;
        let op = operation(&doc, method, path)?;
        assert!(
            item.get("servers").is_none() && op.get("servers").is_none(),
            "{method} {path} is served by the proxy: it must not override `servers`"
        );
    }
    for (method, path) in ADMIN_OPERATIONS {
        let item = member(&doc, &doc["paths"], path, "paths")?;
        let op = operation(&doc, method, path)?;
        let servers = op.get("servers").or_else(|| item.get("servers"));
        assert_eq!(
            urls(servers),
            vec![ADMIN_SERVER.to_string()],
            "{method} {path} is served by the admin listener only"
        );
    }
    Ok(())
}

#[test]
fn each_endpoint_names_its_credential() -> TestResult {
    let doc = openapi()?;
    let schemes = member(&doc, &doc, "components", "document")?;
    let schemes = member(&doc, schemes, "securitySchemes", "components")?;
    // (method, path, every alternative must include a scheme of this shape)
    let cases: [(&str, &str, &str, &str); 12] = [
        ("POST", "/v1/app/user.new.session", "http", "bearer"),
        ("POST", "/api/v3/sessions", "apiKey", "x-api-key"),
        ("POST", "/api/v4/sessions", "apiKey", "x-api-key"),
        ("POST", "/api/v5/sessions", "apiKey", "x-api-key"),
        (
            "GET",
            "/api/v3/authentication/token",
            "apiKey",
            "x-server-key",
        ),
        (
            "POST",
            "/api/v4/authentication/token",
            "apiKey",
            "x-server-key",
        ),
        ("GET", "/api/v3/network-settings/chat", "http", "bearer"),
        ("POST", "/api/customer-sessions/", "http", "bearer"),
        ("POST", "/api/customer-sessions", "http", "bearer"),
        ("PUT", "/admin/customers/{id}", "http", "bearer"),
        ("GET", "/admin/customers/{id}", "http", "bearer"),
        ("DELETE", "/admin/customers/{id}", "http", "bearer"),
    ];
    for (method, path, kind, what) in cases {
        let at = format!("{method} {path}");
        let op = operation(&doc, method, path)?;
        let alternatives = op
            .get("security")
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("{at}: no `security`"))?;
        for alt in alternatives {
            let names = alt
                .as_object()
                .ok_or_else(|| format!("{at}: a security requirement is not an object"))?;
            let matches = names.keys().any(|name| {
                schemes.get(name).is_some_and(|s| {
                    s["type"] == kind
                        && (s["scheme"] == what || (s["in"] == "header" && s["name"] == what))
                })
            });
            assert!(
                matches,
                "{at}: security {alt} lacks a {kind} `{what}` scheme"
            );
        }
    }
    Ok(())
}

#[test]
fn success_schemas_require_exactly_the_golden_keys() -> TestResult {
    let doc = openapi()?;
    for g in &GOLDEN {
        let want = fixture(g.dialect, "response")?;
        for path in g.paths {
            let at = format!("POST {path}");
            let op = operation(&doc, "POST", path)?;
            let ok = response(&doc, op, g.success, &at)?;
            let schema = json_schema(&doc, ok, &format!("{at} {}", g.success))?;
            let mut visited = BTreeSet::new();
            check_object(&doc, schema, &want, "", &mut visited)
                .map_err(|e| format!("{at} ({} golden response): {e}", g.dialect))?;
            for nested in g.nested {
                assert!(
                    visited.contains(*nested),
                    "{at}: `{nested}` of the golden response was not checked (visited {visited:?})"
                );
            }
        }
    }
    Ok(())
}

/// (minLength, maxLength) of a property of an object schema.
fn lengths(
    doc: &Value,
    schema: &Value,
    prop: &str,
    at: &str,
) -> Result<(u64, Option<u64>), String> {
    let props = member(doc, schema, "properties", at)?;
    let p = member(doc, props, prop, at)?;
    let min = p.get("minLength").and_then(Value::as_u64).unwrap_or(0);
    Ok((min, p.get("maxLength").and_then(Value::as_u64)))
}

#[test]
fn request_schemas_have_the_parsers_rules() -> TestResult {
    let doc = openapi()?;
    for g in &GOLDEN {
        for path in g.paths {
            let at = format!("POST {path} request");
            let op = operation(&doc, "POST", path)?;
            let body = member(&doc, op, "requestBody", &at)?;
            let schema = json_schema(&doc, body, &at)?;
            assert_eq!(
                strings(schema.get("required")),
                set(g.request_required),
                "{at}: `required` must be what {}::parse() requires",
                g.dialect
            );
        }
    }

    // (path, property, minLength, maxLength) in characters, as parse() checks them.
    let limits: [(&str, &str, u64, Option<u64>); 14] = [
        ("/v1/app/user.new.session", "business_id", 1, Some(256)),
        ("/v1/app/user.new.session", "role", 1, Some(256)),
        (
            "/v1/app/user.new.session",
            "profile_image_url",
            0,
            Some(2048),
        ),
        ("/api/v3/sessions", "userId", 1, Some(50)),
        ("/api/v3/sessions", "deviceId", 1, Some(150)),
        ("/api/v3/sessions", "displayName", 0, Some(100)),
        ("/api/v3/sessions", "authToken", 1, Some(100)),
        ("/api/v5/sessions", "userId", 1, Some(50)),
        ("/api/v5/sessions", "deviceId", 1, Some(150)),
        ("/api/v5/sessions", "displayName", 0, Some(100)),
        ("/api/v5/sessions", "authToken", 1, Some(100)),
        ("/api/customer-sessions/", "return_url", 1, Some(2083)),
        (
            "/api/customer-sessions/",
            "external_member_id",
            1,
            Some(256),
        ),
        ("/api/customer-sessions", "return_url", 1, Some(2083)),
    ];
    for (path, prop, min, max) in limits {
        let at = format!("POST {path} request");
        let op = operation(&doc, "POST", path)?;
        let body = member(&doc, op, "requestBody", &at)?;
        let schema = json_schema(&doc, body, &at)?;
        assert_eq!(
            lengths(&doc, schema, prop, &at)?,
            (min, max),
            "{at}: (minLength, maxLength) of `{prop}`"
        );
    }

    // Formats: UUIDs for Rapidly ids, a URI for return_url.
    let op = operation(&doc, "POST", "/api/customer-sessions/")?;
    let body = member(&doc, op, "requestBody", "rapidly request")?;
    let schema = json_schema(&doc, body, "rapidly request")?;
    let props = member(&doc, schema, "properties", "rapidly request")?;
    for (prop, format) in [
        ("customer_id", "uuid"),
        ("member_id", "uuid"),
        ("return_url", "uri"),
    ] {
        let p = member(&doc, props, prop, "rapidly request")?;
        assert_eq!(p["format"], format, "rapidly request: format of `{prop}`");
    }

    // The query parameters' limits.
    let query = |method: &str, path: &str, name: &str| -> Result<(u64, Option<u64>), String> {
        let op = operation(&doc, method, path)?;
        let params = op
            .get("parameters")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{method} {path}: no parameters"))?;
        for p in params {
            let p = resolve(&doc, p)?;
            if p["name"] == name && p["in"] == "query" {
                let s = member(&doc, p, "schema", name)?;
                let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0);
                return Ok((min, s.get("maxLength").and_then(Value::as_u64)));
            }
        }
        Err(format!("{method} {path}: no query parameter `{name}`"))
    };
    assert_eq!(
        query("POST", "/v1/app/user.new.session", "host_id")?,
        (1, Some(256)),
        "host_id limits"
    );
    assert_eq!(
        query("GET", "/api/v3/authentication/token", "userId")?,
        (1, Some(50)),
        "userId query limits"
    );
    Ok(())
}

/// The alternatives of a schema (`oneOf`/`anyOf` members, or the schema itself), resolved.
fn variants<'a>(doc: &'a Value, schema: &'a Value) -> Result<Vec<&'a Value>, String> {
    let schema = resolve(doc, schema)?;
    match schema.get("oneOf").or_else(|| schema.get("anyOf")) {
        Some(Value::Array(items)) => items.iter().map(|v| resolve(doc, v)).collect(),
        _ => Ok(vec![schema]),
    }
}

/// The variant of a response's JSON schema whose `required` is exactly `required`.
fn error_variant<'a>(
    doc: &'a Value,
    op: &'a Value,
    status: &str,
    required: &[&str],
    at: &str,
) -> Result<&'a Value, String> {
    let at = format!("{at} {status}");
    let r = response(doc, op, status, &at)?;
    let schema = json_schema(doc, r, &at)?;
    let want = set(required);
    variants(doc, schema)?
        .into_iter()
        .find(|v| strings(v.get("required")) == want)
        .ok_or_else(|| format!("{at}: no error body requiring exactly {want:?}"))
}

fn error_statuses(doc: &Value, op: &Value, at: &str) -> Result<Vec<String>, String> {
    let responses = member(doc, op, "responses", at)?;
    let responses = responses
        .as_object()
        .ok_or_else(|| format!("{at}: responses is not an object"))?;
    // 431 is the proxy's own refusal, before any dialect runs.
    Ok(responses
        .keys()
        .filter(|s| !s.starts_with('2') && s.as_str() != "431")
        .cloned()
        .collect())
}

#[test]
fn error_schemas_are_each_dialects_own() -> TestResult {
    let doc = openapi()?;

    let at = "POST /v1/app/user.new.session";
    let op = operation(&doc, "POST", "/v1/app/user.new.session")?;
    let statuses = error_statuses(&doc, op, at)?;
    assert!(!statuses.is_empty(), "{at}: no error responses");
    for status in statuses {
        let v = error_variant(&doc, op, &status, &["success", "message"], at)?;
        assert_eq!(v["properties"]["success"]["const"], false, "{at} {status}");
    }

    let codes: BTreeSet<u64> = [400_000, 400_100, 400_300, 400_400, 429_000, 500_000].into();
    for (method, path) in PROXY_OPERATIONS
        .iter()
        .filter(|(_, p)| p.starts_with("/api/v"))
    {
        let at = format!("{method} {path}");
        let op = operation(&doc, method, path)?;
        let statuses = error_statuses(&doc, op, &at)?;
        assert!(!statuses.is_empty(), "{at}: no error responses");
        for status in statuses {
            let v = error_variant(&doc, op, &status, &["status", "code", "message"], &at)?;
            let code = member(&doc, &v["properties"], "code", &at)?;
            let documented: BTreeSet<u64> = code
                .get("enum")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default();
            assert_eq!(documented, codes, "{at} {status}: the Amity codes");
        }
    }

    for path in ["/api/customer-sessions/", "/api/customer-sessions"] {
        let at = format!("POST {path}");
        let op = operation(&doc, "POST", path)?;
        let v = error_variant(&doc, op, "422", &["detail"], &at)?;
        let detail = member(&doc, &v["properties"], "detail", &at)?;
        let item = member(&doc, detail, "items", &at)?;
        assert_eq!(
            strings(item.get("required")),
            set(&["loc", "msg", "type"]),
            "{at} 422: detail[] items"
        );
        for status in ["401", "403", "413", "500", "503"] {
            error_variant(&doc, op, status, &["error", "detail"], &at)?;
        }
        let v = error_variant(&doc, op, "405", &["detail"], &at)?;
        assert_eq!(
            v["properties"]["detail"]["const"], "Method Not Allowed",
            "{at} 405"
        );
    }

    // The gateway's own format: its /auth API and the admin API (health answers its own
    // readiness document, not an error).
    let own = PROXY_OPERATIONS
        .iter()
        .filter(|(_, p)| p.starts_with("/auth/"))
        .chain(
            ADMIN_OPERATIONS
                .iter()
                .filter(|(_, p)| p.starts_with("/admin/")),
        );
    for (method, path) in own {
        let at = format!("{method} {path}");
        let op = operation(&doc, method, path)?;
        for status in error_statuses(&doc, op, &at)? {
            error_variant(&doc, op, &status, &["error", "message"], &at)?;
        }
    }
    Ok(())
}

#[test]
fn examples_are_the_golden_fixtures() -> TestResult {
    let doc = openapi()?;
    for g in &GOLDEN {
        let response_fixture = fixture(g.dialect, "response")?;
        let request_fixture = fixture(g.dialect, "request")?;
        for path in g.paths {
            let at = format!("POST {path}");
            let op = operation(&doc, "POST", path)?;
            let ok = response(&doc, op, g.success, &at)?;
            let m = media(&doc, ok, "application/json", &at)?;
            assert_eq!(
                m.pointer("/examples/golden/value"),
                Some(&response_fixture),
                "{at}: the `golden` example of the {} response must equal \
                 tests/fixtures/dialects/{}/response.json",
                g.success,
                g.dialect
            );
            let body = member(&doc, op, "requestBody", &at)?;
            let m = media(&doc, body, "application/json", &at)?;
            assert_eq!(
                m.pointer("/examples/golden/value"),
                Some(&request_fixture),
                "{at}: the `golden` request example must equal \
                 tests/fixtures/dialects/{}/request.json",
                g.dialect
            );
        }
    }
    Ok(())
}
