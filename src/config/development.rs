//! Development credentials: the public secrets shipped for development (the default config
//! and the Kubernetes dev overlay), found wherever they are used, and refused on a listener
//! that is not loopback.

use super::*;

/// Secrets shipped in `config/sessiongate.toml` for development. Seeing one at start logs a
/// warning: they are public and must never guard real traffic.
pub const DEVELOPMENT_SECRETS: &[&str] = &[
    "dev-admin-token-not-for-production",
    "dev-only-hs256-secret-change-me-0123456789abcdef",
    "dev-mottasl-token",
    "dev-amity-api-key",
    "dev-amity-secure-key",
    "dev-amity-server-key",
    "dev-rapidly-token",
    // deploy/kubernetes/overlays/dev/secrets/admin-token
    "dev-k8s-admin-token-not-for-production",
];

/// Public keys (PEM bodies) of the signing keys committed for development: whoever reads
/// this repository holds their private halves.
pub const DEVELOPMENT_PUBLIC_KEYS: &[&str] = &[
    // deploy/kubernetes/overlays/dev/secrets/signing.pub.pem
    "MCowBQYDK2VwAyEANmO7RRQ36l0C5U3ENf9QedkHgvw0wlZ6yhID55pu6P4=",
];

/// Which of `names` (`[secret key, public key]`) to report when a key is a development one.
fn development_key(material: &KeyMaterial, names: [&'static str; 2]) -> Option<&'static str> {
    match material {
        KeyMaterial::Shared(s) if DEVELOPMENT_SECRETS.contains(&s.expose()) => Some(names[0]),
        KeyMaterial::Asymmetric { public_pem, .. }
            if DEVELOPMENT_PUBLIC_KEYS.contains(&pem_body(public_pem).as_str()) =>
        {
            Some(names[1])
        }
        _ => None,
    }
}

/// The base64 body of a PEM text, whitespace removed.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.split_whitespace())
        .collect()
}

impl Config {
    /// Names of settings that still hold a shipped development secret.
    pub fn development_credentials(&self) -> Vec<&'static str> {
        let mut found = Vec::new();
        let is_dev = |s: &Secret| DEVELOPMENT_SECRETS.contains(&s.expose());
        if is_dev(&self.admin.token) {
            found.push("admin.token");
        }
        for k in &self.tokens.keys {
            if let Some(what) = development_key(
                &k.material,
                ["tokens.keys.secret", "tokens.keys.public_key"],
            ) {
                found.push(what);
            }
        }
        // A development key reused to sign Hasura JWTs lets anyone mint Hasura identities.
        for k in &self.hasura.keys {
            if let Some(what) = development_key(
                &k.material,
                ["hasura.keys.secret", "hasura.keys.public_key"],
            ) {
                found.push(what);
            }
        }
        let dev_digests: Vec<CredentialDigest> = DEVELOPMENT_SECRETS
            .iter()
            .map(|s| CredentialDigest::of(s.as_bytes()))
            .collect();
        let is_dev_digest = |d: &CredentialDigest| dev_digests.contains(d);
        let d = &self.dialects;
        if let Some(m) = &d.mottasl {
            if m.credentials.iter().any(|c| is_dev_digest(&c.digest)) {
                found.push("dialects.mottasl.credentials");
            }
        }
        if let Some(a) = &d.amity {
            if a.networks.iter().any(|n| {
                is_dev_digest(&n.digest) || n.server_key.as_ref().is_some_and(is_dev_digest)
            }) {
                found.push("dialects.amity.networks");
            }
        }
        if let Some(r) = &d.rapidly {
            if r.workspaces.iter().any(|w| is_dev_digest(&w.digest)) {
                found.push("dialects.rapidly.workspaces");
            }
        }
        found.dedup();
        found
    }
}

impl Validator<'_> {
    /// A shipped development credential is public: it may only guard loopback listeners,
    /// unless the operator says otherwise in so many words. `false` (with an issue naming the
    /// credential and the listener) when the config must not start.
    pub(super) fn development_exposure(&mut self, cfg: &Config) -> bool {
        let dev = cfg.development_credentials();
        if dev.is_empty()
            || self.env.var(env::ALLOW_DEVELOPMENT_CREDENTIALS).as_deref() == Some("1")
        {
            return true;
        }
        let exposed: Vec<String> = [
            ("server.listen", cfg.listen),
            ("server.admin_listen", cfg.admin_listen),
        ]
        .iter()
        .filter(|(_, a)| !a.ip().is_loopback())
        .map(|(k, a)| format!("{k} = {a}"))
        .collect();
        if exposed.is_empty() {
            return true;
        }
        self.issue(
            dev.join(", "),
            format!(
                "holds a public development credential while {} is not a loopback address; \
                 set real credentials, listen on loopback, or set {}=1 to accept the risk",
                exposed.join(" and "),
                env::ALLOW_DEVELOPMENT_CREDENTIALS
            ),
        );
        false
    }
}
