//! Rapidly: `POST /api/customer-sessions/` with a workspace access token. Customers are
//! provisioned through the admin API (or the config); a session is created for an existing,
//! non-deleted customer of the token's workspace. Validation errors are FastAPI-shaped
//! (`422 {"detail": [{"loc", "msg", "type"}]}`), other errors `{"error", "detail"}`.

use super::{bearer, field, json_object, require_json, FieldKind, Fields, Len};
use super::{Problem, Reply, Request};
use crate::config::dialects::{find_credential, parse_uuid4, RapidlyWorkspace};
use crate::session::model::{now_unix, rfc3339, NewSession, Session};
use crate::session::store::WriteMode;
use crate::App;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Digest;

/// Directory kind of customer documents.
const CUSTOMER: &str = "customer";
/// The scope a workspace token needs to create customer sessions.
pub const SCOPE: &str = "customer_sessions:write";

/// A customer, stored and rendered in the documented shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    /// UUIDv4.
    pub id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, null until modified.
    pub modified_at: Option<String>,
    /// Free-form metadata.
    pub metadata: Map<String, Value>,
    /// The workspace's own id for the customer.
    pub external_id: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// Whether the email is verified.
    pub email_verified: bool,
    /// Name.
    pub name: Option<String>,
    /// Billing address object, or null.
    pub billing_address: Option<Value>,
    /// Workspace it belongs to.
    pub workspace_id: String,
    /// RFC 3339 when soft-deleted.
    pub deleted_at: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// `individual` or `team`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Which customer a session is for: the body is a union of two shapes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomerRef {
    /// `customer_id`: canonical UUIDv4 of the customer.
    Id(String),
    /// `external_customer_id` (or its legacy name `customer_external_id`): the workspace's
    /// own id for the customer.
    External(String),
}

impl CustomerRef {
    /// The body field that named the customer (where "does not exist" is reported).
    pub fn field(&self) -> &'static str {
        match self {
            CustomerRef::Id(_) => "customer_id",
            CustomerRef::External(_) => "external_customer_id",
        }
    }
}

/// A validated customer-session request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSession {
    /// The customer.
    pub customer: CustomerRef,
    /// Back-button URL of the portal.
    pub return_url: Option<String>,
    /// Member (member model only).
    pub member_id: Option<String>,
    /// External member id (member model only).
    pub external_member_id: Option<String>,
}

fn uuid4_field(f: &Fields<'_>, name: &'static str) -> Result<Option<String>, Problem> {
    let Some(raw) = f
        .opt_string(name, Len { min: 0, max: 64 })
        .map_err(|p| match p {
            // An over-long string is still "not a UUID" to the client.
            Problem::Field(fp) if matches!(fp.kind, FieldKind::TooLong(_)) => {
                field(&[name], FieldKind::Format("UUID"))
            }
            other => other,
        })?
    else {
        return Ok(None);
    };
    if uuid::Uuid::try_parse(&raw).is_err() {
        return Err(field(&[name], FieldKind::Format("UUID")));
    }
    parse_uuid4(&raw)
        .map(Some)
        .ok_or_else(|| field(&[name], FieldKind::Format("UUID version 4")))
}

/// Parses and validates the body against the workspace's member model.
pub fn parse(body: &[u8], member_model_enabled: bool) -> Result<CreateSession, Problem> {
    let obj = json_object(body)?;
    let f = Fields::new(&obj);
    // `customer_id` when present; else the external id (the provider accepts its older name
    // `customer_external_id` too). When both are given the provider's union resolves by
    // pydantic's scoring; here `customer_id` always wins, a stable rule.
    let customer = match uuid4_field(&f, "customer_id")? {
        Some(id) => CustomerRef::Id(id),
        None => {
            let external = match f.opt_string("external_customer_id", Len { min: 0, max: 256 })? {
                Some(e) => Some(e),
                None => f.opt_string("customer_external_id", Len { min: 0, max: 256 })?,
            };
            CustomerRef::External(
                external.ok_or_else(|| field(&["customer_id"], FieldKind::Missing))?,
            )
        }
    };
    let return_url = f.opt_string("return_url", Len { min: 1, max: 2083 })?;
    if let Some(u) = &return_url {
        // Only web URLs: the portal renders it as a back link, and `javascript:` or `data:`
        // there would be script injection.
        if !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            return Err(field(&["return_url"], FieldKind::Format("URL")));
        }
    }
    // Checked for shape either way; without the member model they are ignored, as the
    // provider's server does (its member branch only runs when the model is on).
    let member_id = uuid4_field(&f, "member_id")?;
    let external_member_id = f.opt_string("external_member_id", Len { min: 1, max: 256 })?;
    let (member_id, external_member_id) = if member_model_enabled {
        (member_id, external_member_id)
    } else {
        (None, None)
    };
    Ok(CreateSession {
        customer,
        return_url,
        member_id,
        external_member_id,
    })
}

/// `customer_portal_url`: the workspace's portal with the session token.
pub fn portal_url(base: &str, token: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}customer_session_token={token}")
}

/// The 201 body.
pub fn render_success(
    token: &str,
    session: &Session,
    req: &CreateSession,
    customer: &Customer,
    workspace: &RapidlyWorkspace,
) -> Value {
    json!({
        "created_at": rfc3339(session.created_at),
        "modified_at": null,
        "id": session.external_id,
        "token": token,
        "expires_at": rfc3339(session.expires_at),
        "return_url": req.return_url,
        "customer_portal_url": portal_url(&workspace.portal_base_url, token),
        "customer_id": customer.id,
        "customer": rendered_customer(customer),
    })
}

/// A customer as the provider renders it in a session: `email` and `avatar_url` are
/// strings, never null (its `email` column is not nullable; `avatar_url` is computed from
/// the email, Gravatar's by default, unless one was stored).
pub fn rendered_customer(customer: &Customer) -> Value {
    let email = customer.email.clone().unwrap_or_default();
    let avatar = customer.avatar_url.clone().unwrap_or_else(|| {
        let digest = sha2::Sha256::digest(email.to_lowercase().as_bytes());
        format!(
            "https://www.gravatar.com/avatar/{}?d=404",
            hex::encode(digest)
        )
    });
    let mut v = serde_json::to_value(customer).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("email".into(), Value::String(email));
        m.insert("avatar_url".into(), Value::String(avatar));
    }
    v
}

/// The customer with this id: from the store, or provisioned from the config on first use
/// (a config customer deleted through the admin API stays deleted: its record remains).
pub async fn find_customer(app: &App, id: &str) -> Result<Option<Customer>, Problem> {
    let directory = app.sessions.directory();
    if let Some(c) = directory.document::<Customer>(CUSTOMER, id).await? {
        return Ok(Some(c));
    }
    let seed = app
        .config
        .dialects
        .rapidly
        .as_ref()
        .and_then(|r| r.customers.iter().find(|c| c.id == id));
    let Some(seed) = seed else {
        return Ok(None);
    };
    let customer = Customer {
        id: seed.id.clone(),
        created_at: rfc3339(now_unix()),
        modified_at: None,
        metadata: Map::new(),
        external_id: seed.external_id.clone(),
        email: seed.email.clone(),
        email_verified: false,
        name: seed.name.clone(),
        billing_address: None,
        workspace_id: seed.workspace_id.clone(),
        deleted_at: None,
        avatar_url: None,
        kind: "individual".into(),
    };
    if directory
        .put_document(CUSTOMER, id, &customer, WriteMode::IfAbsent)
        .await?
    {
        return Ok(Some(customer));
    }
    // Another request provisioned it first: theirs is the record.
    Ok(directory.document::<Customer>(CUSTOMER, id).await?)
}

/// Index of customers by the workspace's own id for them: `(workspace, external id)` →
/// customer id. Written when a customer is put; a stale entry (the external id changed since)
/// is harmless, because the customer it names is checked to still carry that external id.
const CUSTOMER_EXTERNAL: &str = "customer_ext";

fn external_key(workspace_id: &str, external_id: &str) -> String {
    format!("{}:{workspace_id}{external_id}", workspace_id.len())
}

/// The live customer of `workspace_id` whose external id is `external_id`: from the index,
/// else among the configured customers (provisioned on first use, like by id).
pub async fn find_by_external_id(
    app: &App,
    workspace_id: &str,
    external_id: &str,
) -> Result<Option<Customer>, Problem> {
    let matches = |c: &Customer| {
        c.workspace_id == workspace_id
            && c.deleted_at.is_none()
            && c.external_id.as_deref() == Some(external_id)
    };
    let indexed: Option<String> = app
        .sessions
        .directory()
        .document(CUSTOMER_EXTERNAL, &external_key(workspace_id, external_id))
        .await?;
    if let Some(id) = indexed {
        if let Some(c) = find_customer(app, &id).await?.filter(matches) {
            return Ok(Some(c));
        }
    }
    let seeded = app.config.dialects.rapidly.as_ref().and_then(|r| {
        r.customers.iter().find(|c| {
            c.workspace_id == workspace_id && c.external_id.as_deref() == Some(external_id)
        })
    });
    match seeded {
        Some(seed) => Ok(find_customer(app, &seed.id).await?.filter(matches)),
        None => Ok(None),
    }
}

/// `POST /api/customer-sessions/`.
pub async fn create_session(app: &App, req: &Request<'_>) -> Result<Reply, Problem> {
    let cfg = app
        .config
        .dialects
        .rapidly
        .as_ref()
        .ok_or(Problem::Internal)?;
    let token = bearer(req.headers)
        .ok_or_else(|| Problem::NoCredential("a workspace access token is required".into()))?;
    let workspace = find_credential(&cfg.workspaces, token.as_bytes())
        .ok_or_else(|| Problem::Unauthorized("the access token is invalid".into()))?;
    app.limits
        .create_with("rapidly", &workspace.digest, workspace.session_rate_limit)
        .await?;
    if !workspace.scopes.iter().any(|s| s == SCOPE) {
        return Err(Problem::Forbidden(format!(
            "the access token lacks the {SCOPE} scope"
        )));
    }
    require_json(req.headers)?;
    let parsed = parse(req.body, workspace.member_model_enabled)?;
    let found = match &parsed.customer {
        CustomerRef::Id(id) => find_customer(app, id).await?,
        CustomerRef::External(ext) => {
            find_by_external_id(app, &workspace.workspace_id, ext).await?
        }
    };
    let customer = found
        .filter(|c| c.workspace_id == workspace.workspace_id && c.deleted_at.is_none())
        .ok_or_else(|| Problem::NotFound {
            field: parsed.customer.field(),
            message: "Customer does not exist.".into(),
        })?;
    let mut new = NewSession::new(
        "rapidly",
        customer.id.clone(),
        workspace.workspace_id.clone(),
        workspace.default_host_id.clone(),
        "customer".into(),
        workspace.ttl_secs,
    );
    new.external_id = Some(uuid::Uuid::new_v4().to_string());
    let issued = app.sessions.create(new).await?;
    app.metrics
        .sessions_created
        .with_label_values(&["rapidly"])
        .inc();
    tracing::info!(
        dialect = "rapidly",
        workspace = %workspace.name,
        customer_id = %customer.id,
        "session created"
    );
    Ok(Reply::json(
        201,
        &render_success(
            &issued.access_token,
            &issued.session,
            &parsed,
            &customer,
            workspace,
        ),
    ))
}

/// What `PUT /admin/customers/{id}` may set.
pub fn parse_customer(
    id: &str,
    body: &[u8],
    workspaces: &[RapidlyWorkspace],
) -> Result<Customer, Problem> {
    let obj = json_object(body)?;
    let f = Fields::new(&obj);
    let workspace_id = f.string("workspace_id", Len { min: 1, max: 256 })?;
    if !workspaces.iter().any(|w| w.workspace_id == workspace_id) {
        return Err(field(
            &["workspace_id"],
            FieldKind::Invalid("is not a configured workspace".into()),
        ));
    }
    let email = f.opt_string("email", Len { min: 3, max: 320 })?;
    if email.as_ref().is_some_and(|e| !e.contains('@')) {
        return Err(field(&["email"], FieldKind::Format("email address")));
    }
    let email_verified = match obj.get("email_verified") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(field(&["email_verified"], FieldKind::Type("a boolean"))),
    };
    let metadata = match obj.get("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            if m.len() > 50 {
                return Err(field(
                    &["metadata"],
                    FieldKind::Invalid("may have at most 50 keys".into()),
                ));
            }
            if m.values()
                .any(|v| !(v.is_string() || v.is_number() || v.is_boolean()))
            {
                return Err(field(
                    &["metadata"],
                    FieldKind::Invalid("values must be strings, numbers or booleans".into()),
                ));
            }
            m.clone()
        }
        Some(_) => return Err(field(&["metadata"], FieldKind::Type("an object"))),
    };
    let billing_address = match f.opt_object("billing_address")? {
        None => None,
        Some(b) => {
            let country = b.string("country", Len { min: 2, max: 2 })?;
            if !country.bytes().all(|c| c.is_ascii_uppercase()) {
                return Err(b.invalid(
                    "country",
                    FieldKind::Format("ISO 3166-1 alpha-2 country code"),
                ));
            }
            let mut addr = Map::new();
            addr.insert("country".into(), country.into());
            for part in ["line1", "line2", "postal_code", "city", "state"] {
                let v = b.opt_string(part, Len { min: 0, max: 256 })?;
                addr.insert(part.into(), v.map_or(Value::Null, Value::from));
            }
            Some(Value::Object(addr))
        }
    };
    let kind = f
        .opt_string("type", Len { min: 1, max: 16 })?
        .unwrap_or_else(|| "individual".into());
    if kind != "individual" && kind != "team" {
        return Err(field(
            &["type"],
            FieldKind::Invalid("must be individual or team".into()),
        ));
    }
    Ok(Customer {
        id: id.to_string(),
        created_at: rfc3339(now_unix()),
        modified_at: None,
        metadata,
        external_id: f.opt_string("external_id", Len { min: 1, max: 256 })?,
        email,
        email_verified,
        name: f.opt_string("name", Len { min: 0, max: 256 })?,
        billing_address,
        workspace_id,
        deleted_at: None,
        avatar_url: f.opt_string("avatar_url", Len { min: 1, max: 2083 })?,
        kind,
    })
}

/// Creates or replaces a customer (a replaced one keeps `created_at`, gets `modified_at`,
/// and is no longer deleted). `Ok(true)` when it was created.
pub async fn put_customer(app: &App, mut customer: Customer) -> Result<(Customer, bool), Problem> {
    let directory = app.sessions.directory();
    let existing = find_customer(app, &customer.id).await?;
    let created = existing.is_none();
    // An external id names one customer of a workspace, as in the provider's database.
    if let Some(ext) = &customer.external_id {
        if let Some(holder) = find_by_external_id(app, &customer.workspace_id, ext).await? {
            if holder.id != customer.id {
                return Err(field(
                    &["external_id"],
                    FieldKind::Invalid(format!(
                        "is already the external id of customer {} in this workspace",
                        holder.id
                    )),
                ));
            }
        }
    }
    if let Some(old) = &existing {
        // The old external id stops naming this customer.
        if let Some(old_ext) = old
            .external_id
            .as_ref()
            .filter(|e| Some(*e) != customer.external_id.as_ref())
        {
            let key = external_key(&old.workspace_id, old_ext);
            let named: Option<String> = directory.document(CUSTOMER_EXTERNAL, &key).await?;
            if named.as_deref() == Some(customer.id.as_str()) {
                directory.delete_document(CUSTOMER_EXTERNAL, &key).await?;
            }
        }
    }
    if let Some(old) = existing {
        customer.created_at = old.created_at;
        customer.modified_at = Some(rfc3339(now_unix()));
    }
    directory
        .put_document(CUSTOMER, &customer.id.clone(), &customer, WriteMode::Upsert)
        .await?;
    // After the customer: an index entry never names a customer that is not stored, and a
    // failure here is answered as one (the admin's retry converges).
    if let Some(ext) = &customer.external_id {
        directory
            .put_document(
                CUSTOMER_EXTERNAL,
                &external_key(&customer.workspace_id, ext),
                &customer.id,
                WriteMode::Upsert,
            )
            .await?;
    }
    Ok((customer, created))
}

/// Soft-deletes a customer: `deleted_at` is set and no new session can be created for it.
/// `Ok(None)` when there is no such customer.
pub async fn delete_customer(app: &App, id: &str) -> Result<Option<Customer>, Problem> {
    let Some(mut customer) = find_customer(app, id).await? else {
        return Ok(None);
    };
    if customer.deleted_at.is_none() {
        customer.deleted_at = Some(rfc3339(now_unix()));
        app.sessions
            .directory()
            .put_document(CUSTOMER, id, &customer, WriteMode::Upsert)
            .await?;
    }
    Ok(Some(customer))
}

fn validation_error(loc: Vec<Value>, msg: String, kind: &str) -> Value {
    json!({"detail": [{"loc": loc, "msg": msg, "type": kind}]})
}

/// Rapidly's error bodies.
pub fn render(problem: &Problem) -> Reply {
    match problem {
        Problem::Field(f) => {
            let (kind, msg) = match &f.kind {
                FieldKind::Missing => ("missing", "Field required".to_string()),
                FieldKind::Type("a string") => {
                    ("string_type", "Input should be a valid string".into())
                }
                FieldKind::Type("an object") => {
                    ("dict_type", "Input should be a valid dictionary".into())
                }
                FieldKind::Type(t) => ("type_error", format!("Input should be {t}")),
                FieldKind::TooShort(n) => (
                    "string_too_short",
                    format!("String should have at least {n} character{}", plural(*n)),
                ),
                FieldKind::TooLong(n) => (
                    "string_too_long",
                    format!("String should have at most {n} character{}", plural(*n)),
                ),
                FieldKind::Format("UUID") => {
                    ("uuid_parsing", "Input should be a valid UUID".into())
                }
                FieldKind::Format("UUID version 4") => {
                    ("uuid_version", "UUID version 4 expected".into())
                }
                FieldKind::Format("URL") => ("url_parsing", "Input should be a valid URL".into()),
                FieldKind::Format(what) => {
                    ("value_error", format!("Input should be a valid {what}"))
                }
                FieldKind::Invalid(why) => ("value_error", format!("{} {why}", f.field())),
            };
            let mut loc = vec![Value::from(if f.in_query { "query" } else { "body" })];
            loc.extend(f.loc.iter().map(|s| Value::from(s.as_str())));
            Reply::json(422, &validation_error(loc, msg, kind))
        }
        Problem::Malformed(m) => Reply::json(
            422,
            &validation_error(vec!["body".into()], m.clone(), "json_invalid"),
        ),
        Problem::ContentType => Reply::json(
            422,
            &validation_error(
                vec!["header".into(), "content-type".into()],
                "Content-Type must be application/json".into(),
                "content_type",
            ),
        ),
        Problem::NotFound { field, message } => Reply::json(
            422,
            &validation_error(
                vec!["body".into(), (*field).into()],
                message.clone(),
                "value_error",
            ),
        ),
        Problem::Unauthorized(m) | Problem::NoCredential(m) => error(401, "Unauthorized", m),
        Problem::Gate(e) => render(&Problem::from(e.clone())),
        Problem::Forbidden(m) => error(403, "InsufficientScope", m),
        Problem::PayloadTooLarge(n) => error(
            413,
            "RequestEntityTooLarge",
            &format!("the request body is larger than {n} bytes"),
        ),
        Problem::MethodNotAllowed(_) => Reply::json(405, &json!({"detail": "Method Not Allowed"})),
        Problem::Timeout => error(
            408,
            "RequestTimeout",
            "the request body was not received in time",
        ),
        Problem::Unavailable => error(
            503,
            "ServiceUnavailable",
            "the session store is unavailable; nothing was created",
        ),
        Problem::RateLimited(secs) => error(
            429,
            "TooManyRequests",
            &format!("too many requests; retry after {secs} seconds"),
        ),
        Problem::Internal => error(
            500,
            "InternalServerError",
            "internal error; nothing was created",
        ),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn error(status: u16, error: &str, detail: &str) -> Reply {
    Reply::json(status, &json!({"error": error, "detail": detail}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dialects::CredentialDigest;

    const REQUEST: &str = include_str!("../../tests/fixtures/dialects/rapidly/request.json");
    const RESPONSE: &str = include_str!("../../tests/fixtures/dialects/rapidly/response.json");
    const CUSTOMER_ID: &str = "7b0c7c6e-6f1d-4c3e-9a57-2f1e4d8b9c01";

    fn workspace() -> RapidlyWorkspace {
        RapidlyWorkspace {
            name: "dev".into(),
            workspace_id: "dev-workspace".into(),
            digest: CredentialDigest::of(b"dev-rapidly-token"),
            scopes: vec![SCOPE.into()],
            default_host_id: "dev-host".into(),
            ttl_secs: 3600,
            member_model_enabled: false,
            portal_base_url: "https://portal.example/dev-workspace/portal".into(),
            session_rate_limit: None,
        }
    }

    fn detail(p: &Problem) -> Value {
        let r = render(p);
        assert_eq!(r.status, 422);
        serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null)["detail"][0].clone()
    }

    #[test]
    fn golden_request_to_response() -> Result<(), Box<dyn std::error::Error>> {
        let req = parse(REQUEST.as_bytes(), false)?;
        assert_eq!(req.customer, CustomerRef::Id(CUSTOMER_ID.into()));
        let customer = Customer {
            id: CUSTOMER_ID.into(),
            created_at: "2023-11-07T05:31:56Z".into(),
            modified_at: None,
            metadata: Map::new(),
            external_id: Some("usr_1337".into()),
            email: Some("dev-customer@example.com".into()),
            email_verified: true,
            name: Some("John Doe".into()),
            billing_address: None,
            workspace_id: "dev-workspace".into(),
            deleted_at: None,
            avatar_url: None,
            kind: "individual".into(),
        };
        let session = Session {
            session_id: "s".into(),
            user_id: CUSTOMER_ID.into(),
            business_id: "dev-workspace".into(),
            host_id: "dev-host".into(),
            role: "customer".into(),
            created_at: 1_700_000_100,
            expires_at: 1_700_003_700,
            source: "rapidly".into(),
            external_id: Some("2f0c1d6e-3b4a-4c5d-8e9f-0a1b2c3d4e5f".into()),
            user_gen: 0,
            business_gen: 0,
            user_agent: None,
            ip: None,
        };
        let got = render_success("tok", &session, &req, &customer, &workspace());
        let want: Value = serde_json::from_str(RESPONSE)?;
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn validation_errors_are_fastapi_shaped() {
        let p = |v: Value| parse(v.to_string().as_bytes(), false).err();
        let d = |v: Value| p(v).map(|e| detail(&e)).unwrap_or(Value::Null);
        assert_eq!(
            d(json!({})),
            json!({"loc": ["body", "customer_id"], "msg": "Field required", "type": "missing"})
        );
        assert_eq!(d(json!({"customer_id": "nope"}))["type"], "uuid_parsing");
        assert_eq!(
            d(json!({"customer_id": "7b0c7c6e-6f1d-1c3e-9a57-2f1e4d8b9c01"}))["type"],
            "uuid_version"
        );
        assert_eq!(d(json!({"customer_id": 5}))["type"], "string_type");
        assert_eq!(
            d(json!({"customer_id": CUSTOMER_ID, "return_url": ""}))["type"],
            "string_too_short"
        );
        assert_eq!(
            d(
                json!({"customer_id": CUSTOMER_ID, "return_url": format!("https://e.x/{}", "a".repeat(2075))})
            )["type"],
            "string_too_long"
        );
        assert_eq!(
            d(json!({"customer_id": CUSTOMER_ID, "return_url": "not a url"}))["type"],
            "url_parsing"
        );
        assert_eq!(
            d(json!({"customer_id": CUSTOMER_ID, "return_url": "javascript:alert(1)"}))["type"],
            "url_parsing"
        );
        // The union's other branch, by either name; customer_id wins when both are given.
        let by = |v: Value| parse(v.to_string().as_bytes(), false).map(|c| c.customer);
        assert_eq!(
            by(json!({"external_customer_id": "crm-1"})),
            Ok(CustomerRef::External("crm-1".into()))
        );
        assert_eq!(
            by(json!({"customer_external_id": "crm-1"})),
            Ok(CustomerRef::External("crm-1".into()))
        );
        assert_eq!(
            by(json!({"customer_id": CUSTOMER_ID, "external_customer_id": "crm-1"})),
            Ok(CustomerRef::Id(CUSTOMER_ID.into()))
        );
        assert_eq!(d(json!({"external_customer_id": 5}))["type"], "string_type");
        // Without the member model, member fields are ignored (but still shape-checked).
        let ignored = parse(
            json!({"customer_id": CUSTOMER_ID, "member_id": CUSTOMER_ID, "external_member_id": "m"})
                .to_string()
                .as_bytes(),
            false,
        );
        assert!(ignored.is_ok_and(|c| c.member_id.is_none() && c.external_member_id.is_none()));
        assert_eq!(
            d(json!({"customer_id": CUSTOMER_ID, "member_id": "nope"}))["type"],
            "uuid_parsing"
        );
        assert!(parse(
            json!({"customer_id": CUSTOMER_ID, "member_id": null, "return_url": null})
                .to_string()
                .as_bytes(),
            false
        )
        .is_ok());
        assert!(parse(
            json!({"customer_id": CUSTOMER_ID, "member_id": CUSTOMER_ID, "external_member_id": "m"})
                .to_string()
                .as_bytes(),
            true
        )
        .is_ok());
        assert_eq!(
            detail(&Problem::Malformed("x".into()))["type"],
            "json_invalid"
        );
    }

    #[test]
    fn other_errors_have_error_and_detail() {
        let r = render(&Problem::Unauthorized("bad".into()));
        assert_eq!(r.status, 401);
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert_eq!(v, json!({"error": "Unauthorized", "detail": "bad"}));
        assert_eq!(render(&Problem::Forbidden("x".into())).status, 403);
        assert_eq!(render(&Problem::PayloadTooLarge(1)).status, 413);
        assert_eq!(render(&Problem::Unavailable).status, 503);
        let nf = detail(&Problem::NotFound {
            field: "customer_id",
            message: "Customer does not exist.".into(),
        });
        assert_eq!(nf["loc"], json!(["body", "customer_id"]));
    }

    #[test]
    fn portal_url_appends_the_token() {
        assert_eq!(
            portal_url("https://p/x", "t"),
            "https://p/x?customer_session_token=t"
        );
        assert_eq!(
            portal_url("https://p/x?a=1", "t"),
            "https://p/x?a=1&customer_session_token=t"
        );
    }

    #[test]
    fn customer_input_is_validated() {
        let ws = [workspace()];
        let ok = parse_customer(
            CUSTOMER_ID,
            json!({"workspace_id": "dev-workspace", "email": "a@b.c", "billing_address": {"country": "AD"}})
                .to_string()
                .as_bytes(),
            &ws,
        );
        assert!(ok.is_ok_and(|c| c.kind == "individual" && c.billing_address.is_some()));
        assert!(parse_customer(CUSTOMER_ID, br#"{"workspace_id": "other"}"#, &ws).is_err());
        assert!(parse_customer(
            CUSTOMER_ID,
            br#"{"workspace_id": "dev-workspace", "type": "robot"}"#,
            &ws
        )
        .is_err());
        assert!(parse_customer(
            CUSTOMER_ID,
            br#"{"workspace_id": "dev-workspace", "billing_address": {"country": "andorra"}}"#,
            &ws
        )
        .is_err());
    }
}
