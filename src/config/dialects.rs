//! Validated settings of the three session dialects, and the credential digests every
//! dialect matches presented keys against.

use super::file::{
    AmityNetworkSection, AmitySection, DialectsSection, MottaslCredentialSection, MottaslSection,
    RapidlyCustomerSection, RapidlySection, RapidlyWorkspaceSection, SecretSource,
};
use super::Validator;
use crate::header_names::is_header_safe;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of a credential. Presented credentials are hashed and compared with this in
/// constant time, so the config may hold digests instead of plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialDigest([u8; 32]);

impl std::fmt::Debug for CredentialDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl CredentialDigest {
    /// The digest of a plaintext credential.
    pub fn of(secret: &[u8]) -> Self {
        CredentialDigest(Sha256::digest(secret).into())
    }

    /// The digest's bytes (also used as an HMAC key for Amity auth tokens).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn from_hex(hex_digest: &str) -> Option<Self> {
        let bytes = hex::decode(hex_digest.trim()).ok()?;
        <[u8; 32]>::try_from(bytes).ok().map(CredentialDigest)
    }
}

/// Something a presented credential can select.
pub trait Credentialed {
    /// The credential's digest.
    fn digest(&self) -> &CredentialDigest;
}

/// The entry whose credential is `presented`, comparing against every entry in constant
/// time (no early exit), so timing tells nothing about which entry came close.
pub fn find_credential<'a, T: Credentialed>(entries: &'a [T], presented: &[u8]) -> Option<&'a T> {
    find_credential_by(entries, presented, |e| Some(e.digest()))
}

/// [`find_credential`] over another digest of each entry (entries without one never match),
/// e.g. an Amity network's server key.
pub fn find_credential_by<'a, T>(
    entries: &'a [T],
    presented: &[u8],
    digest: impl Fn(&T) -> Option<&CredentialDigest>,
) -> Option<&'a T> {
    let presented = CredentialDigest::of(presented);
    let mut found = None;
    for entry in entries {
        if let Some(d) = digest(entry) {
            let equal: bool = d.0.ct_eq(&presented.0).into();
            if equal && found.is_none() {
                found = Some(entry);
            }
        }
    }
    found
}

/// All dialects; `None` means disabled.
#[derive(Debug, Clone)]
pub struct DialectsConfig {
    /// Largest request body a dialect endpoint reads.
    pub max_body_bytes: usize,
    /// Mottasl.
    pub mottasl: Option<MottaslConfig>,
    /// Amity.
    pub amity: Option<AmityConfig>,
    /// Rapidly.
    pub rapidly: Option<RapidlyConfig>,
}

/// Mottasl settings.
#[derive(Debug, Clone)]
pub struct MottaslConfig {
    /// Integration tokens.
    pub credentials: Vec<MottaslCredential>,
}

/// A Mottasl integration token and its scope.
#[derive(Debug, Clone)]
pub struct MottaslCredential {
    /// Name for logs.
    pub name: String,
    /// Token digest.
    pub digest: CredentialDigest,
    /// Businesses it may create sessions for (`*`: any, for multi-tenant integrations that
    /// add businesses without a redeploy).
    pub businesses: Vec<String>,
    /// Roles it may grant (`*`: any).
    pub roles: Vec<String>,
    /// Host ids a request may choose (empty: any).
    pub allowed_host_ids: Vec<String>,
    /// Host id when none is asked for.
    pub default_host_id: String,
    /// Session lifetime, seconds.
    pub ttl_secs: u64,
    /// `channels` of the response.
    pub channels: Vec<String>,
    /// `billing_source` of the response.
    pub billing_source: String,
    /// `user_details.language` of the response.
    pub language: String,
    /// Session-creation requests per rate-limit window (`None`: the global default).
    pub session_rate_limit: Option<u32>,
}

impl MottaslCredential {
    /// Whether it may create sessions for `business`: listed, or `*` for a business id that
    /// is a plain id — not `*` itself, and nothing Hasura reads as an array of ids
    /// (`{a,b}`), which a wildcard credential could otherwise use to reach several tenants
    /// with one session.
    pub fn allows_business(&self, business: &str) -> bool {
        self.businesses.iter().any(|b| b != "*" && b == business)
            || (self.businesses.iter().any(|b| b == "*")
                && !business.contains(['*', '{', '}', ',', '"']))
    }

    /// Whether it may grant `role`: listed, or `*` — which never covers Hasura's `admin`
    /// (a super-user in every mode): that one must be listed by name.
    pub fn allows_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
            || (role != "admin" && self.roles.iter().any(|r| r == "*"))
    }
}

impl Credentialed for MottaslCredential {
    fn digest(&self) -> &CredentialDigest {
        &self.digest
    }
}

/// Amity settings.
#[derive(Debug, Clone)]
pub struct AmityConfig {
    /// Normalised path prefixes where a `token` query parameter may carry the access token.
    pub realtime_paths: Vec<String>,
    /// Lifetime of secure-mode auth tokens, seconds.
    pub auth_token_ttl_secs: u64,
    /// A new login from a device revokes that device's previous session.
    pub replace_device_sessions: bool,
    /// Normalised path prefixes (segment-bounded) where refusals use Amity's error format.
    pub api_prefixes: Vec<String>,
    /// Networks.
    pub networks: Vec<AmityNetwork>,
}

/// One Amity network.
#[derive(Debug, Clone)]
pub struct AmityNetwork {
    /// Name for logs.
    pub name: String,
    /// Network id.
    pub network_id: String,
    /// API key digest.
    pub digest: CredentialDigest,
    /// Secure mode: the server key's digest (it also keys auth tokens).
    pub server_key: Option<CredentialDigest>,
    /// `x-host-id` of its sessions.
    pub default_host_id: String,
    /// `x-hasura-role` of its sessions.
    pub role: String,
    /// Session lifetime, seconds.
    pub ttl_secs: u64,
    /// Body of `GET /api/v3/network-settings/chat`.
    pub chat_settings: serde_json::Value,
    /// Session-creation requests per rate-limit window (`None`: the global default).
    pub session_rate_limit: Option<u32>,
}

impl Credentialed for AmityNetwork {
    fn digest(&self) -> &CredentialDigest {
        &self.digest
    }
}

/// Rapidly settings.
#[derive(Debug, Clone)]
pub struct RapidlyConfig {
    /// Workspaces.
    pub workspaces: Vec<RapidlyWorkspace>,
    /// Customers provisioned on first use.
    pub customers: Vec<CustomerSeed>,
}

/// One Rapidly workspace.
#[derive(Debug, Clone)]
pub struct RapidlyWorkspace {
    /// Name for logs.
    pub name: String,
    /// Workspace id.
    pub workspace_id: String,
    /// Access token digest.
    pub digest: CredentialDigest,
    /// Scopes of the token.
    pub scopes: Vec<String>,
    /// `x-host-id` of its sessions.
    pub default_host_id: String,
    /// Session lifetime, seconds.
    pub ttl_secs: u64,
    /// Whether member fields are accepted.
    pub member_model_enabled: bool,
    /// Customer portal base URL.
    pub portal_base_url: String,
    /// Session-creation requests per rate-limit window (`None`: the global default).
    pub session_rate_limit: Option<u32>,
}

impl Credentialed for RapidlyWorkspace {
    fn digest(&self) -> &CredentialDigest {
        &self.digest
    }
}

/// A customer provisioned from the config.
#[derive(Debug, Clone)]
pub struct CustomerSeed {
    /// UUIDv4.
    pub id: String,
    /// Workspace.
    pub workspace_id: String,
    /// Email.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// External id.
    pub external_id: Option<String>,
}

/// Whether `s` is a canonical lowercase hyphenated UUID of version 4.
pub fn is_uuid4(s: &str) -> bool {
    s.len() == 36
        && uuid::Uuid::try_parse(s)
            .is_ok_and(|u| u.get_version_num() == 4 && u.hyphenated().to_string() == s)
}

/// A UUIDv4 in any form `uuid` parses (hyphenated, simple, braced, URN; any case), in its
/// canonical lowercase hyphenated form; `None` if it is not a version-4 UUID.
pub fn parse_uuid4(s: &str) -> Option<String> {
    uuid::Uuid::try_parse(s)
        .ok()
        .filter(|u| u.get_version_num() == 4)
        .map(|u| u.hyphenated().to_string())
}

/// Lifetimes shared by every dialect's validation.
pub(super) struct Ttls {
    pub default: u64,
    pub max: u64,
}

impl Validator<'_> {
    pub(super) fn dialects(&mut self, d: DialectsSection, ttls: &Ttls) -> DialectsConfig {
        let max_body_bytes = d.max_body_bytes.unwrap_or(64 * 1024);
        if !(1..=16 * 1024 * 1024).contains(&max_body_bytes) {
            self.issue("dialects.max_body_bytes", "must be between 1 and 16777216");
        }
        DialectsConfig {
            max_body_bytes,
            mottasl: d
                .mottasl
                .filter(|s| s.enabled.unwrap_or(true))
                .map(|s| self.mottasl(s, ttls)),
            amity: d
                .amity
                .filter(|s| s.enabled.unwrap_or(true))
                .map(|s| self.amity(s, ttls)),
            rapidly: d
                .rapidly
                .filter(|s| s.enabled.unwrap_or(true))
                .map(|s| self.rapidly(s, ttls)),
        }
    }

    /// A credential given as a secret or as a hex digest, exactly one of them.
    fn credential(
        &mut self,
        key: &str,
        plain: Option<&SecretSource>,
        digest: Option<&str>,
        plain_name: &str,
    ) -> Option<CredentialDigest> {
        match (plain, digest) {
            (Some(src), None) => {
                let secret = self.secret(&format!("{key}.{plain_name}"), src)?;
                if secret.expose().len() < 8 {
                    self.issue(
                        format!("{key}.{plain_name}"),
                        "must be at least 8 characters",
                    );
                    return None;
                }
                Some(CredentialDigest::of(secret.expose().as_bytes()))
            }
            (None, Some(hex)) => {
                let d = CredentialDigest::from_hex(hex);
                if d.is_none() {
                    self.issue(
                        format!("{key}.{plain_name}_sha256"),
                        "must be 64 hexadecimal characters (a SHA-256 digest)",
                    );
                }
                d
            }
            (Some(_), Some(_)) => {
                self.issue(
                    key,
                    format!("set either {plain_name} or {plain_name}_sha256, not both"),
                );
                None
            }
            (None, None) => {
                self.issue(
                    format!("{key}.{plain_name}"),
                    format!("is required (or {plain_name}_sha256)"),
                );
                None
            }
        }
    }

    /// A value that ends up in a header: required, printable ASCII, bounded.
    fn header_value(&mut self, key: &str, value: Option<String>) -> String {
        match value {
            Some(v) if is_header_safe(&v) && v.len() <= 256 => v,
            Some(_) => {
                self.issue(
                    key,
                    "must be 1-256 printable ASCII characters without surrounding spaces",
                );
                String::new()
            }
            None => {
                self.issue(key, "is required");
                String::new()
            }
        }
    }

    fn ttl(&mut self, key: &str, value: Option<u64>, ttls: &Ttls) -> u64 {
        let v = value.unwrap_or(ttls.default);
        if v == 0 || v > ttls.max {
            self.issue(
                key,
                format!(
                    "must be between 1 and tokens.max_ttl_seconds ({})",
                    ttls.max
                ),
            );
        }
        v
    }

    fn no_duplicate_digests(&mut self, key: &str, digests: &[Option<&CredentialDigest>]) {
        for (i, d) in digests.iter().enumerate() {
            if let Some(d) = d {
                if digests[..i].iter().any(|o| o.as_ref() == Some(d)) {
                    self.issue(
                        format!("{key}[{i}]"),
                        "uses the same credential as an earlier entry",
                    );
                }
            }
        }
    }

    fn mottasl(&mut self, s: MottaslSection, ttls: &Ttls) -> MottaslConfig {
        if s.credentials.is_empty() {
            self.issue(
                "dialects.mottasl.credentials",
                "at least one credential is required when the dialect is enabled",
            );
        }
        let mut credentials = Vec::new();
        let mut digests = Vec::new();
        for (i, c) in s.credentials.into_iter().enumerate() {
            let key = format!("dialects.mottasl.credentials[{i}]");
            let parsed = self.mottasl_credential(&key, c, ttls);
            digests.push(parsed.as_ref().map(|c| c.digest.clone()));
            credentials.extend(parsed);
        }
        let refs: Vec<_> = digests.iter().map(Option::as_ref).collect();
        self.no_duplicate_digests("dialects.mottasl.credentials", &refs);
        MottaslConfig { credentials }
    }

    fn mottasl_credential(
        &mut self,
        key: &str,
        c: MottaslCredentialSection,
        ttls: &Ttls,
    ) -> Option<MottaslCredential> {
        let digest = self.credential(key, c.token.as_ref(), c.token_sha256.as_deref(), "token");
        for (field, list) in [
            ("businesses", &c.businesses),
            ("roles", &c.roles),
            ("allowed_host_ids", &c.allowed_host_ids),
        ] {
            if list.is_empty() && field != "allowed_host_ids" {
                self.issue(format!("{key}.{field}"), "must list at least one value");
            }
            for (j, v) in list.iter().enumerate() {
                if !is_header_safe(v) || v.len() > 256 {
                    self.issue(
                        format!("{key}.{field}[{j}]"),
                        "must be 1-256 printable ASCII characters",
                    );
                }
            }
        }
        let default_host_id =
            self.header_value(&format!("{key}.default_host_id"), c.default_host_id);
        let ttl_secs = self.ttl(
            &format!("{key}.session_ttl_seconds"),
            c.session_ttl_seconds,
            ttls,
        );
        Some(MottaslCredential {
            name: c.name.unwrap_or_else(|| key.to_string()),
            digest: digest?,
            businesses: c.businesses,
            roles: c.roles,
            allowed_host_ids: c.allowed_host_ids,
            default_host_id,
            ttl_secs,
            channels: c.channels,
            billing_source: c.billing_source.unwrap_or_default(),
            language: c.language.unwrap_or_else(|| "en".into()),
            session_rate_limit: c.session_rate_limit,
        })
    }

    fn amity(&mut self, s: AmitySection, ttls: &Ttls) -> AmityConfig {
        let mut realtime_paths = Vec::new();
        for (i, p) in s.realtime_paths.into_iter().enumerate() {
            match crate::path::normalize_path(&p) {
                Ok(n) if n == p && p.len() > 1 => realtime_paths.push(p),
                _ => self.issue(
                    format!("dialects.amity.realtime_paths[{i}]"),
                    format!("`{p}` must be a normalised absolute path other than `/`"),
                ),
            }
        }
        let mut api_prefixes = Vec::new();
        let given = s.api_prefixes.unwrap_or_else(|| {
            ["/api/v3/", "/api/v4/", "/api/v5/"]
                .iter()
                .map(|p| p.to_string())
                .collect()
        });
        for (i, p) in given.iter().enumerate() {
            // `/api/v3/` and `/api/v3` mean the same segment-bounded prefix.
            let trimmed = p.strip_suffix('/').unwrap_or(p);
            match crate::path::normalize_path(trimmed) {
                Ok(n) if n == trimmed && trimmed.len() > 1 => api_prefixes.push(n),
                _ => self.issue(
                    format!("dialects.amity.api_prefixes[{i}]"),
                    format!("`{p}` must be a normalised absolute path other than `/`"),
                ),
            }
        }
        let auth_token_ttl_secs = s.auth_token_ttl_seconds.unwrap_or(600);
        if !(1..=86_400).contains(&auth_token_ttl_secs) {
            self.issue(
                "dialects.amity.auth_token_ttl_seconds",
                "must be between 1 and 86400",
            );
        }
        if s.networks.is_empty() {
            self.issue(
                "dialects.amity.networks",
                "at least one network is required when the dialect is enabled",
            );
        }
        let mut networks: Vec<AmityNetwork> = Vec::new();
        let mut digests = Vec::new();
        for (i, n) in s.networks.into_iter().enumerate() {
            let key = format!("dialects.amity.networks[{i}]");
            let parsed = self.amity_network(&key, n, ttls);
            if let Some(p) = &parsed {
                if networks.iter().any(|o| o.network_id == p.network_id) {
                    self.issue(format!("{key}.network_id"), "is used by an earlier network");
                }
            }
            digests.push(parsed.as_ref().map(|n| n.digest.clone()));
            networks.extend(parsed);
        }
        let refs: Vec<_> = digests.iter().map(Option::as_ref).collect();
        self.no_duplicate_digests("dialects.amity.networks", &refs);
        AmityConfig {
            realtime_paths,
            auth_token_ttl_secs,
            replace_device_sessions: s.replace_device_sessions.unwrap_or(false),
            api_prefixes,
            networks,
        }
    }

    fn amity_network(
        &mut self,
        key: &str,
        n: AmityNetworkSection,
        ttls: &Ttls,
    ) -> Option<AmityNetwork> {
        let digest = self.credential(
            key,
            n.api_key.as_ref(),
            n.api_key_sha256.as_deref(),
            "api_key",
        );
        let network_id = self.header_value(&format!("{key}.network_id"), n.network_id);
        let secure = n.secure.unwrap_or(false);
        let server_key = if secure {
            self.credential(
                key,
                n.server_key.as_ref(),
                n.server_key_sha256.as_deref(),
                "server_key",
            )
        } else {
            if n.server_key.is_some() || n.server_key_sha256.is_some() {
                self.issue(
                    format!("{key}.server_key"),
                    "is only used when secure = true",
                );
            }
            None
        };
        let default_host_id =
            self.header_value(&format!("{key}.default_host_id"), n.default_host_id);
        let role = self.header_value(
            &format!("{key}.role"),
            Some(n.role.unwrap_or_else(|| "user".into())),
        );
        let ttl_secs = self.ttl(
            &format!("{key}.session_ttl_seconds"),
            n.session_ttl_seconds,
            ttls,
        );
        let chat_settings = match n.chat_settings {
            None => serde_json::json!({
                "messagePreview": {"enabled": false, "isIncludeDeleted": false}
            }),
            Some(v) => match serde_json::to_value(v) {
                Ok(j @ serde_json::Value::Object(_)) => j,
                _ => {
                    self.issue(format!("{key}.chat_settings"), "must be a table");
                    serde_json::Value::Null
                }
            },
        };
        if secure && server_key.is_none() {
            return None;
        }
        Some(AmityNetwork {
            name: n.name.unwrap_or_else(|| key.to_string()),
            network_id,
            digest: digest?,
            server_key,
            default_host_id,
            role,
            ttl_secs,
            chat_settings,
            session_rate_limit: n.session_rate_limit,
        })
    }

    fn rapidly(&mut self, s: RapidlySection, ttls: &Ttls) -> RapidlyConfig {
        if s.workspaces.is_empty() {
            self.issue(
                "dialects.rapidly.workspaces",
                "at least one workspace is required when the dialect is enabled",
            );
        }
        let mut workspaces: Vec<RapidlyWorkspace> = Vec::new();
        let mut digests = Vec::new();
        for (i, w) in s.workspaces.into_iter().enumerate() {
            let key = format!("dialects.rapidly.workspaces[{i}]");
            let parsed = self.rapidly_workspace(&key, w, ttls);
            if let Some(p) = &parsed {
                if workspaces.iter().any(|o| o.workspace_id == p.workspace_id) {
                    self.issue(
                        format!("{key}.workspace_id"),
                        "is used by an earlier workspace",
                    );
                }
            }
            digests.push(parsed.as_ref().map(|w| w.digest.clone()));
            workspaces.extend(parsed);
        }
        let refs: Vec<_> = digests.iter().map(Option::as_ref).collect();
        self.no_duplicate_digests("dialects.rapidly.workspaces", &refs);
        let mut customers = Vec::new();
        for (i, c) in s.customers.into_iter().enumerate() {
            let key = format!("dialects.rapidly.customers[{i}]");
            if let Some(seed) = self.customer_seed(&key, c, &workspaces) {
                customers.push(seed);
            }
        }
        RapidlyConfig {
            workspaces,
            customers,
        }
    }

    fn rapidly_workspace(
        &mut self,
        key: &str,
        w: RapidlyWorkspaceSection,
        ttls: &Ttls,
    ) -> Option<RapidlyWorkspace> {
        let digest = self.credential(key, w.token.as_ref(), w.token_sha256.as_deref(), "token");
        let workspace_id = self.header_value(&format!("{key}.workspace_id"), w.workspace_id);
        let default_host_id =
            self.header_value(&format!("{key}.default_host_id"), w.default_host_id);
        let ttl_secs = self.ttl(
            &format!("{key}.session_ttl_seconds"),
            w.session_ttl_seconds,
            ttls,
        );
        let portal_base_url = match w.portal_base_url {
            Some(u) => match url::Url::parse(&u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => u,
                _ => {
                    self.issue(
                        format!("{key}.portal_base_url"),
                        "must be an absolute http(s) URL",
                    );
                    String::new()
                }
            },
            None => {
                self.issue(format!("{key}.portal_base_url"), "is required");
                String::new()
            }
        };
        Some(RapidlyWorkspace {
            name: w.name.unwrap_or_else(|| key.to_string()),
            workspace_id,
            digest: digest?,
            scopes: w
                .scopes
                .unwrap_or_else(|| vec!["customer_sessions:write".into()]),
            default_host_id,
            ttl_secs,
            member_model_enabled: w.member_model_enabled.unwrap_or(false),
            portal_base_url,
            session_rate_limit: w.session_rate_limit,
        })
    }

    fn customer_seed(
        &mut self,
        key: &str,
        c: RapidlyCustomerSection,
        workspaces: &[RapidlyWorkspace],
    ) -> Option<CustomerSeed> {
        let mut ok = true;
        if !is_uuid4(&c.id) {
            self.issue(format!("{key}.id"), "must be a lowercase hyphenated UUIDv4");
            ok = false;
        }
        if !workspaces.iter().any(|w| w.workspace_id == c.workspace_id) {
            self.issue(
                format!("{key}.workspace_id"),
                format!("`{}` is not a configured workspace", c.workspace_id),
            );
            ok = false;
        }
        ok.then_some(CustomerSeed {
            id: c.id,
            workspace_id: c.workspace_id,
            email: c.email,
            name: c.name,
            external_id: c.external_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_lookup_matches_digest_only() {
        struct C(CredentialDigest);
        impl Credentialed for C {
            fn digest(&self) -> &CredentialDigest {
                &self.0
            }
        }
        let entries = [
            C(CredentialDigest::of(b"first-key")),
            C(CredentialDigest::of(b"second-key")),
        ];
        assert!(find_credential(&entries, b"second-key")
            .is_some_and(|c| c.0 == CredentialDigest::of(b"second-key")));
        assert!(find_credential(&entries, b"second-ke").is_none());
        assert!(find_credential(&entries, b"").is_none());
        assert_eq!(format!("{:?}", entries[0].0), "***");
    }

    #[test]
    fn uuid4_is_strict() {
        assert!(is_uuid4("7b0c7c6e-6f1d-4c3e-9a57-2f1e4d8b9c01"));
        assert!(!is_uuid4("7B0C7C6E-6F1D-4C3E-9A57-2F1E4D8B9C01"));
        assert!(!is_uuid4("7b0c7c6e6f1d4c3e9a572f1e4d8b9c01"));
        assert!(!is_uuid4("7b0c7c6e-6f1d-1c3e-9a57-2f1e4d8b9c01"));
        assert!(!is_uuid4("not-a-uuid"));
        assert_eq!(
            parse_uuid4("7B0C7C6E6F1D4C3E9A572F1E4D8B9C01").as_deref(),
            Some("7b0c7c6e-6f1d-4c3e-9a57-2f1e4d8b9c01")
        );
        assert_eq!(parse_uuid4("7b0c7c6e-6f1d-1c3e-9a57-2f1e4d8b9c01"), None);
    }
}
