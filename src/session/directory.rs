//! The user directory: small JSON records kept in the session store beside sessions (users
//! per business, customers, device bindings). Typed here, opaque to the store, and free of
//! any dialect: a dialect decides what goes into a profile, the directory only keeps it.

use super::model::now_unix;
use super::store::{RecordKey, RecordStore, StoreError, WriteMode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// A user known to the gateway: a stable id for one provider identity, and its profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The gateway's id of this user; never changes once assigned.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last profile update.
    pub updated_at: i64,
    /// Profile fields, as the dialect that created the user names them.
    #[serde(default)]
    pub profile: Map<String, Value>,
}

/// Typed access to directory records.
#[derive(Clone)]
pub struct Directory {
    store: Arc<dyn RecordStore>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory").finish_non_exhaustive()
    }
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Joins key parts with a byte no part can contain unnoticed (NUL), so `("a", "b\0c")` and
/// `("a\0b", "c")` cannot collide: parts are length-prefixed.
fn compound(parts: &[&str]) -> String {
    let mut id = String::new();
    for p in parts {
        id.push_str(&p.len().to_string());
        id.push(':');
        id.push_str(p);
    }
    id
}

impl Directory {
    /// A directory over `store`.
    pub fn new(store: Arc<dyn RecordStore>) -> Self {
        Directory { store }
    }

    fn user_key(scope: &str, external: &[&str]) -> RecordKey {
        let mut parts = vec![scope];
        parts.extend_from_slice(external);
        RecordKey {
            kind: "user",
            id: compound(&parts),
        }
    }

    /// The user for provider identity `external` within `scope` (a business, a network).
    pub async fn user(
        &self,
        scope: &str,
        external: &[&str],
    ) -> Result<Option<UserRecord>, StoreError> {
        self.get(&Self::user_key(scope, external)).await
    }

    /// Finds or creates the user for `external` within `scope` and merges `profile` into it
    /// (fields given replace stored ones; others are kept). A new user gets `new_id()`; two
    /// concurrent first sessions of one identity still end with one id, because creation is
    /// a create-if-absent and the loser re-reads.
    pub async fn upsert_user(
        &self,
        scope: &str,
        external: &[&str],
        profile: Map<String, Value>,
        new_id: impl Fn() -> String,
    ) -> Result<UserRecord, StoreError> {
        let key = Self::user_key(scope, external);
        let now = now_unix();
        for _ in 0..3 {
            match self.get::<UserRecord>(&key).await? {
                Some(mut user) => {
                    let changed = profile.iter().any(|(k, v)| user.profile.get(k) != Some(v));
                    if changed {
                        user.profile.extend(profile);
                        user.updated_at = now;
                        self.put(&key, &user, WriteMode::Upsert, None).await?;
                    }
                    return Ok(user);
                }
                None => {
                    let user = UserRecord {
                        id: new_id(),
                        created_at: now,
                        updated_at: now,
                        profile: profile.clone(),
                    };
                    if self.put(&key, &user, WriteMode::IfAbsent, None).await? {
                        return Ok(user);
                    }
                }
            }
        }
        Err(StoreError::Unavailable(
            "user record kept changing while being created".into(),
        ))
    }

    /// Binds `(scope, device)` to `session_id` for `ttl` and returns the session id it was
    /// bound to before, if any.
    pub async fn bind_device(
        &self,
        scope: &str,
        device: &[&str],
        session_id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        let mut parts = vec![scope];
        parts.extend_from_slice(device);
        let key = RecordKey {
            kind: "device",
            id: compound(&parts),
        };
        let previous = self
            .store
            .record_swap(&key, session_id.as_bytes(), Some(ttl))
            .await?;
        Ok(previous.and_then(|p| String::from_utf8(p).ok()))
    }

    /// When a session was last used (unix seconds), if recorded.
    pub async fn last_seen(&self, session_id: &str) -> Result<Option<i64>, StoreError> {
        self.get(&RecordKey {
            kind: "seen",
            id: session_id.to_string(),
        })
        .await
    }

    /// Records when a session was last used; the record lives as long as the session.
    pub async fn set_last_seen(
        &self,
        session_id: &str,
        at: i64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let key = RecordKey {
            kind: "seen",
            id: session_id.to_string(),
        };
        self.put(&key, &at, WriteMode::Upsert, Some(ttl)).await
    }

    /// A document of `kind` by id.
    pub async fn document<T: DeserializeOwned>(
        &self,
        kind: &'static str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get(&RecordKey {
            kind,
            id: id.to_string(),
        })
        .await
    }

    /// Deletes a document of `kind`; `Ok(false)` when there was none.
    pub async fn delete_document(&self, kind: &'static str, id: &str) -> Result<bool, StoreError> {
        self.store
            .record_delete(&RecordKey {
                kind,
                id: id.to_string(),
            })
            .await
    }

    /// Writes a document of `kind`; with [`WriteMode::IfAbsent`], `Ok(false)` if one existed.
    pub async fn put_document<T: Serialize>(
        &self,
        kind: &'static str,
        id: &str,
        value: &T,
        mode: WriteMode,
    ) -> Result<bool, StoreError> {
        let key = RecordKey {
            kind,
            id: id.to_string(),
        };
        self.put(&key, value, mode, None).await
    }

    async fn get<T: DeserializeOwned>(&self, key: &RecordKey) -> Result<Option<T>, StoreError> {
        match self.store.record_get(key).await? {
            Some(raw) => serde_json::from_slice(&raw).map(Some).map_err(corrupt),
            None => Ok(None),
        }
    }

    async fn put<T: Serialize>(
        &self,
        key: &RecordKey,
        value: &T,
        mode: WriteMode,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let raw = serde_json::to_vec(value).map_err(corrupt)?;
        self.store.record_put(key, &raw, mode, ttl).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::memory::MemoryStore;
    use serde_json::json;

    fn dir() -> Directory {
        Directory::new(Arc::new(MemoryStore::new()))
    }

    fn profile(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[tokio::test]
    async fn same_identity_same_id_and_profile_is_updated() -> Result<(), StoreError> {
        let d = dir();
        let a = d
            .upsert_user("biz", &["p", "1"], profile(json!({"name": "a"})), || {
                "id-1".into()
            })
            .await?;
        let b = d
            .upsert_user("biz", &["p", "1"], profile(json!({"name": "b"})), || {
                "id-2".into()
            })
            .await?;
        assert_eq!(a.id, "id-1");
        assert_eq!(b.id, "id-1");
        assert_eq!(b.profile["name"], "b");
        let other_scope = d
            .upsert_user("biz2", &["p", "1"], Map::new(), || "id-3".into())
            .await?;
        assert_eq!(other_scope.id, "id-3");
        Ok(())
    }

    #[tokio::test]
    async fn key_parts_cannot_be_shifted_into_a_collision() -> Result<(), StoreError> {
        let d = dir();
        let a = d
            .upsert_user("a", &["b:c"], Map::new(), || "first".into())
            .await?;
        let b = d
            .upsert_user("a:b", &["c"], Map::new(), || "second".into())
            .await?;
        assert_ne!(a.id, b.id);
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_first_sessions_share_one_id() -> Result<(), StoreError> {
        let d = dir();
        let mut tasks = Vec::new();
        for i in 0..20 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                d.upsert_user("biz", &["x"], Map::new(), move || format!("id-{i}"))
                    .await
            }));
        }
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            match t.await {
                Ok(r) => {
                    ids.insert(r?.id);
                }
                Err(e) => return Err(StoreError::Unavailable(e.to_string())),
            }
        }
        assert_eq!(ids.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn device_binding_returns_the_previous_session() -> Result<(), StoreError> {
        let d = dir();
        let ttl = Duration::from_secs(60);
        assert_eq!(d.bind_device("n", &["u", "d"], "s1", ttl).await?, None);
        assert_eq!(
            d.bind_device("n", &["u", "d"], "s2", ttl).await?,
            Some("s1".into())
        );
        assert_eq!(d.bind_device("n", &["u", "d2"], "s3", ttl).await?, None);
        Ok(())
    }
}
