//! Redis store, on any topology `redis_conn` connects to (standalone, Sentinel, Cluster).
//! Keys carry a TTL equal to the session's remaining life, so Redis expires them by itself
//! and sessions survive gateway restarts.

use super::model::{now_unix, Session};
use super::redis_conn::{Conn, Topology};
use super::store::{
    CounterStore, EventSink, RecordKey, RecordStore, Rotation, SessionStore, StoreError,
    StoreSettings, Successor, UserIndex, WriteMode, INDEX_CAP,
};
use super::window::WindowCount;
use async_trait::async_trait;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use std::time::Duration;
use std::time::Instant;
use tokio::runtime::Handle;

/// Key of a session. The braces are a Cluster hash tag, so every key of one session (the
/// session, its refresh token, its spent refresh tokens) lands on one slot and the Lua
/// scripts that touch several of them work on Cluster.
pub fn session_key(session_id: &str) -> String {
    format!("sg:sess:{{{session_id}}}")
}

/// Current refresh-token hash of a session (same hash tag as the session).
pub fn refresh_key(session_id: &str) -> String {
    format!("sg:rt:{{{session_id}}}")
}

/// Refresh-token hashes of a session that have been rotated away (reuse detection).
pub fn used_refresh_key(session_id: &str) -> String {
    format!("sg:rtu:{{{session_id}}}")
}

/// A session and (when ARGV[2] is not empty) its first refresh hash, with one TTL.
const PUT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) end
return 1
";

/// The last rotation of a session's refresh token, while a retry of it is within grace:
/// `<presented hash>:<sealed successor>`, expiring by itself (same hash tag).
pub fn retry_refresh_key(session_id: &str) -> String {
    format!("sg:rtr:{{{session_id}}}")
}

/// Rotation in one step: KEYS = current, used, retry; ARGV = presented, next, sealed
/// successor, retry grace (ms; 0 = none). Returns {1} rotated, {4, sealed} the token rotated
/// away last and within its retry grace, {2} spent (reuse), {3} unknown or no refresh state
/// (the session is gone). The retry record lives at most as long as the refresh state;
/// hashes are hex, so the `:` after one cannot be part of it.
const ROTATE: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return {3, ''} end
if cur ~= ARGV[1] then
  local retry = redis.call('GET', KEYS[3])
  local spent = ARGV[1] .. ':'
  if retry and string.sub(retry, 1, #spent) == spent then
    return {4, string.sub(retry, #spent + 1)}
  end
  if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return {2, ''} end
  return {3, ''}
end
local ttl = redis.call('PTTL', KEYS[1])
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
redis.call('SADD', KEYS[2], ARGV[1])
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
local grace = tonumber(ARGV[4])
if ttl > 0 and ttl < grace then grace = ttl end
if grace > 0 then
  redis.call('SET', KEYS[3], ARGV[1] .. ':' .. ARGV[3], 'PX', grace)
else
  redis.call('DEL', KEYS[3])
end
return {1, ''}
";

/// A generation counter raised to at least ARGV[1], never lowered: KEYS = counter.
const RESTORE_GENERATION: &str = r"
local g = tonumber(redis.call('GET', KEYS[1]) or '0')
if g < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
";

/// A session and its refresh state in one step: KEYS = session, current, used, retry.
/// Returns whether the session existed.
const DELETE: &str = r"
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return existed
";

/// One hit on a sliding-window counter (a hash of fixed-window index → count, one key so
/// it works on Cluster). Redis' own clock decides the window, so replicas with skewed clocks
/// still share one. KEYS = counter; ARGV = window ms. Returns {current, previous, elapsed}.
const COUNT_HIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = tonumber(ARGV[1])
local idx = math.floor(now / w)
local cur = redis.call('HINCRBY', KEYS[1], string.format('%d', idx), 1)
local prev = tonumber(redis.call('HGET', KEYS[1], string.format('%d', idx - 1)) or '0')
if redis.call('HLEN', KEYS[1]) > 2 then
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    local n = tonumber(f)
    if n ~= idx and n ~= idx - 1 then redis.call('HDEL', KEYS[1], f) end
  end
end
redis.call('PEXPIRE', KEYS[1], w * 2)
return {cur, prev, now - idx * w}
";

/// Adds a session to its user's index: a sorted set scored by expiry (one key, so Cluster
/// keeps it on one node), pruned of expired entries, living as long as its longest entry.
/// At most ARGV[4] entries are kept (the ones expiring last).
/// KEYS = index; ARGV = session id, expiry (unix s), now (unix s), cap.
const INDEX_ADD: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[1], tonumber(last[2]) + 60)
return 1
";

/// Key of a user's session index (the user id hashed, as record ids are).
pub fn index_key(user_id: &str) -> String {
    record_key(&RecordKey {
        kind: "us",
        id: user_id.to_string(),
    })
}

/// Key of a directory record: the id is hashed, so any bytes a client sent (a user id, a
/// device id) make a fixed-size, injection-free key; the hash is also the Cluster hash tag.
pub fn record_key(key: &RecordKey) -> String {
    let digest = Sha256::digest(key.id.as_bytes());
    format!("sg:{}:{{{}}}", key.kind, hex::encode(&digest[..16]))
}

fn ttl_ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// A current-thread Tokio runtime on its own thread, owning the Redis connection's driver
/// task. Pingora gives each service its own runtime; parking the driver here keeps the
/// connection independent of which service touched it first. Dropping the store stops it.
struct IoRuntime {
    handle: Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl IoRuntime {
    fn start() -> std::io::Result<IoRuntime> {
        let (handle_tx, handle_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("sessiongate-redis".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = handle_tx.send(Err(e));
                        return;
                    }
                };
                let _ = handle_tx.send(Ok(rt.handle().clone()));
                rt.block_on(async {
                    let _ = stop_rx.await;
                });
            })?;
        let handle = handle_rx
            .recv()
            .map_err(|_| std::io::Error::other("redis runtime thread died"))??;
        Ok(IoRuntime {
            handle,
            stop: Some(stop),
        })
    }
}

impl Drop for IoRuntime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Sessions, directory records and rate-limit counters in Redis, through one
/// self-reconnecting command connection ([`Conn`]) plus one pub/sub connection for
/// invalidation events (see [`SessionStore::start_events`]).
pub struct RedisStore {
    topology: Topology,
    conn: Conn,
    timeout: Duration,
    io: IoRuntime,
}

/// The channel every replica publishes invalidations (and heartbeats) on.
pub const EVENTS_CHANNEL: &str = "sg:events";
/// Payload of the heartbeat each replica publishes every second; hearing any message proves
/// the subscription is alive.
const HEARTBEAT: &[u8] = b"hb";
/// A subscription that has heard nothing (not even heartbeats) for this long is dead, even
/// if its TCP connection looks open.
const SILENCE_LIMIT: Duration = Duration::from_secs(3);

/// Key of a revocation generation counter.
pub fn generation_key(scope: &str) -> String {
    let digest = Sha256::digest(scope.as_bytes());
    format!("sg:gen:{{{}}}", hex::encode(&digest[..16]))
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A Redis call bounded by `timeout`: an error or a late answer is the store unavailable.
async fn bounded<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(StoreError::Unavailable("redis timed out".into())),
    }
}

impl RedisStore {
    /// Creates the store without connecting: the first command connects, and a lost
    /// connection is re-established in the background, so the gateway starts (not ready)
    /// while Redis is down and recovers by itself when it returns.
    pub fn new(topology: Topology) -> Result<RedisStore, StoreError> {
        let io = IoRuntime::start().map_err(unavailable)?;
        let (conn, _) = Conn::new(&topology, &io.handle).map_err(|e| {
            // redis' message can echo the URL; say only what kind of problem it was.
            StoreError::Unavailable(format!("invalid redis configuration ({:?})", e.kind()))
        })?;
        Ok(RedisStore {
            timeout: topology.timeout,
            topology,
            conn,
            io,
        })
    }

    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut conn = self.conn.clone();
        bounded(self.timeout, cmd.query_async::<T>(&mut conn)).await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn put(&self, session: &Session, refresh_sha256: Option<&str>) -> Result<(), StoreError> {
        let ttl_ms = session.remaining_secs(now_unix()).saturating_mul(1000);
        if ttl_ms == 0 {
            return Ok(());
        }
        let value =
            serde_json::to_string(session).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let id = &session.session_id;
        // One script: the session never exists without its refresh state. Both keys share
        // the session's hash tag, so this works on Cluster too (where MULTI across a
        // connection pool is not an option).
        let script = redis::Script::new(PUT);
        let mut inv = script.prepare_invoke();
        inv.key(session_key(id))
            .key(refresh_key(id))
            .arg(value)
            .arg(refresh_sha256.unwrap_or_default())
            .arg(ttl_ms);
        let mut conn = self.conn.clone();
        bounded(self.timeout, inv.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    async fn rotate_refresh(
        &self,
        session_id: &str,
        presented: &str,
        next: &Successor<'_>,
    ) -> Result<Rotation, StoreError> {
        let script = redis::Script::new(ROTATE);
        let mut inv = script.prepare_invoke();
        inv.key(refresh_key(session_id))
            .key(used_refresh_key(session_id))
            .key(retry_refresh_key(session_id))
            .arg(presented)
            .arg(next.sha256)
            .arg(next.sealed)
            .arg(u64::try_from(next.grace.as_millis()).unwrap_or(u64::MAX));
        let mut conn = self.conn.clone();
        Ok(
            match bounded(self.timeout, inv.invoke_async::<(i64, String)>(&mut conn)).await? {
                (1, _) => Rotation::Rotated,
                (2, _) => Rotation::Reused,
                (4, sealed) => Rotation::Retried(sealed),
                _ => Rotation::Unknown,
            },
        )
    }

    async fn peek_refresh(
        &self,
        session_id: &str,
        presented: &str,
    ) -> Result<Rotation, StoreError> {
        // Plain reads, not a script: they pass a Redis that pauses writes (a failover's
        // `CLIENT PAUSE WRITE`), so a refresh is not refused before its rotation was even
        // tried. Not atomic, and it need not be: only the rotation decides.
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(refresh_key(session_id))
            .cmd("GET")
            .arg(retry_refresh_key(session_id))
            .cmd("SISMEMBER")
            .arg(used_refresh_key(session_id))
            .arg(presented);
        let mut conn = self.conn.clone();
        let (current, retry, spent): (Option<String>, Option<String>, bool) =
            bounded(self.timeout, pipe.query_async(&mut conn)).await?;
        let Some(current) = current else {
            return Ok(Rotation::Unknown);
        };
        if current == presented {
            return Ok(Rotation::Rotated);
        }
        let retried = retry.as_deref().and_then(|r| {
            r.strip_prefix(presented)
                .and_then(|rest| rest.strip_prefix(':'))
        });
        Ok(match retried {
            Some(sealed) => Rotation::Retried(sealed.to_string()),
            None if spent => Rotation::Reused,
            None => Rotation::Unknown,
        })
    }

    async fn get(&self, session_id: &str) -> Result<Option<Session>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(session_key(session_id));
        let raw: Option<String> = self.run(cmd).await?;
        let Some(raw) = raw else { return Ok(None) };
        let session: Session =
            serde_json::from_str(&raw).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        if session.session_id != session_id {
            return Err(StoreError::Corrupt("session id mismatch".into()));
        }
        Ok((!session.is_expired_at(now_unix())).then_some(session))
    }

    async fn delete(&self, session_id: &str) -> Result<bool, StoreError> {
        // One script: a delete that times out happened whole or not at all (two commands
        // could leave the refresh state deleted while the session lives on).
        let script = redis::Script::new(DELETE);
        let mut inv = script.prepare_invoke();
        inv.key(session_key(session_id))
            .key(refresh_key(session_id))
            .key(used_refresh_key(session_id))
            .key(retry_refresh_key(session_id));
        let mut conn = self.conn.clone();
        bounded(self.timeout, inv.invoke_async::<i64>(&mut conn))
            .await
            .map(|existed| existed > 0)
    }

    async fn generations(&self, scopes: &[String]) -> Result<Vec<u64>, StoreError> {
        // Concurrent single GETs, not a pipeline: the counters live in different slots.
        let gets = scopes.iter().map(|s| {
            let mut cmd = redis::cmd("GET");
            cmd.arg(generation_key(s));
            self.run::<Option<u64>>(cmd)
        });
        let values = futures_util::future::try_join_all(gets).await?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }

    async fn bump_generation(&self, scope: &str) -> Result<u64, StoreError> {
        let mut cmd = redis::cmd("INCR");
        cmd.arg(generation_key(scope));
        self.run(cmd).await
    }

    async fn restore_generation(&self, scope: &str, at_least: u64) -> Result<(), StoreError> {
        let script = redis::Script::new(RESTORE_GENERATION);
        let mut inv = script.prepare_invoke();
        inv.key(generation_key(scope)).arg(at_least);
        let mut conn = self.conn.clone();
        bounded(self.timeout, inv.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    async fn publish(&self, payload: &[u8]) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(EVENTS_CHANNEL).arg(payload);
        self.run::<i64>(cmd).await.map(|_| ())
    }

    fn start_events(&self, sink: std::sync::Arc<dyn EventSink>) {
        let heard = std::sync::Arc::new(std::sync::Mutex::new(Instant::now()));
        let restart = std::sync::Arc::new(tokio::sync::Notify::new());
        self.io.handle.spawn(subscriber(
            self.conn.clone(),
            self.topology.clone(),
            self.timeout,
            sink.clone(),
            heard.clone(),
            restart.clone(),
        ));
        self.io.handle.spawn(prober(
            self.conn.clone(),
            self.timeout,
            sink,
            heard,
            restart,
        ));
    }

    async fn settings(&self) -> Result<Option<StoreSettings>, StoreError> {
        // On the store's own runtime: called at start from a runtime that ends after the
        // check, whose tasks (a lazily made connection's) would end with it.
        let (conn, timeout) = (self.conn.clone(), self.timeout);
        self.io
            .handle
            .spawn(read_settings(conn, timeout))
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            .map(Some)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.run(redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Unavailable("unexpected PING reply".into()))
        }
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[async_trait]
impl RecordStore for RedisStore {
    async fn record_get(&self, key: &RecordKey) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(record_key(key));
        self.run(cmd).await
    }

    async fn record_put(
        &self,
        key: &RecordKey,
        value: &[u8],
        mode: WriteMode,
        ttl: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(record_key(key)).arg(value);
        if let Some(ms) = ttl_ms(ttl) {
            cmd.arg("PX").arg(ms);
        }
        if mode == WriteMode::IfAbsent {
            cmd.arg("NX");
        }
        // SET answers OK, or nil when NX found the key.
        let reply: Option<String> = self.run(cmd).await?;
        Ok(reply.is_some())
    }

    async fn record_swap(
        &self,
        key: &RecordKey,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(record_key(key)).arg(value);
        if let Some(ms) = ttl_ms(ttl) {
            cmd.arg("PX").arg(ms);
        }
        cmd.arg("GET");
        self.run(cmd).await
    }

    async fn record_delete(&self, key: &RecordKey) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(record_key(key));
        let n: i64 = self.run(cmd).await?;
        Ok(n > 0)
    }
}

#[async_trait]
impl CounterStore for RedisStore {
    async fn count_hit(&self, key: &str, window: Duration) -> Result<WindowCount, StoreError> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        let script = redis::Script::new(COUNT_HIT);
        let mut inv = script.prepare_invoke();
        inv.key(record_key(&RecordKey {
            kind: "rl",
            id: key.to_string(),
        }))
        .arg(window_ms);
        let mut conn = self.conn.clone();
        match bounded(self.timeout, inv.invoke_async::<Vec<u64>>(&mut conn))
            .await?
            .as_slice()
        {
            &[current, previous, elapsed] => Ok(WindowCount {
                current,
                previous,
                elapsed: Duration::from_millis(elapsed),
                window: Duration::from_millis(window_ms),
            }),
            _ => Err(StoreError::Corrupt("unexpected counter reply".into())),
        }
    }
}

#[async_trait]
impl UserIndex for RedisStore {
    async fn index_add(
        &self,
        user_id: &str,
        session_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let script = redis::Script::new(INDEX_ADD);
        let mut inv = script.prepare_invoke();
        inv.key(index_key(user_id))
            .arg(session_id)
            .arg(expires_at)
            .arg(now_unix())
            .arg(INDEX_CAP);
        let mut conn = self.conn.clone();
        bounded(self.timeout, inv.invoke_async::<i64>(&mut conn))
            .await
            .map(|_| ())
    }

    async fn index_list(&self, user_id: &str, now: i64) -> Result<Vec<String>, StoreError> {
        // ZREVRANGEBYSCORE rather than ZRANGE … BYSCORE REV: the latter needs Redis 6.2.
        let mut cmd = redis::cmd("ZREVRANGEBYSCORE");
        cmd.arg(index_key(user_id))
            .arg("+inf")
            .arg(format!("({now}"))
            .arg("LIMIT")
            .arg(0)
            .arg(INDEX_CAP);
        self.run(cmd).await
    }

    async fn index_remove(&self, user_id: &str, session_ids: &[String]) -> Result<(), StoreError> {
        if session_ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(index_key(user_id)).arg(session_ids);
        let _: i64 = self.run(cmd).await?;
        Ok(())
    }
}

/// The store's epoch: a random id one replica writes once, without a TTL. A Redis that lost
/// its data (restarted empty, failed over to a node that never had it) has none, or
/// another; each replica compares it with the one it knew after every (re)subscription.
pub const EPOCH_KEY: &str = "sg:epoch";

/// KEYS = epoch; ARGV = a new epoch, written when there is none. Returns the epoch.
const EPOCH: &str = r"
local e = redis.call('GET', KEYS[1])
if e then return e end
redis.call('SET', KEYS[1], ARGV[1])
return ARGV[1]
";

/// The store's epoch ([`EPOCH_KEY`]), written if missing.
async fn read_epoch(conn: &Conn, timeout: Duration) -> Result<String, StoreError> {
    let script = redis::Script::new(EPOCH);
    let mut inv = script.prepare_invoke();
    inv.key(EPOCH_KEY).arg(super::model::new_session_id());
    let mut conn = conn.clone();
    bounded(timeout, inv.invoke_async::<String>(&mut conn)).await
}

/// Keeps one pub/sub subscription alive and feeds its messages to `sink`. While it is down
/// (or silent), the sink is told so and bypasses its cache; after every (re)subscription it
/// flushes, since messages sent in the gap are lost.
async fn subscriber(
    conn: Conn,
    topology: Topology,
    timeout: Duration,
    sink: std::sync::Arc<dyn EventSink>,
    heard: std::sync::Arc<std::sync::Mutex<Instant>>,
    restart: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 0usize;
    // The epoch seen at the last subscription (`None` before the first).
    let mut known: Option<String> = None;
    loop {
        attempt = attempt.wrapping_add(1);
        let connected = tokio::time::timeout(timeout.max(Duration::from_secs(1)), async {
            let client = conn.pubsub_client(&topology, attempt).await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(EVENTS_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        // Subscribed first, epoch second: data lost after the epoch was read shows at the
        // next resubscription, as the subscription drops with the store that loses it.
        let epoch = match connected {
            Ok(Ok(pubsub)) => read_epoch(&conn, timeout).await.map(|e| (pubsub, e)),
            _ => Err(StoreError::Unavailable("not subscribed".into())),
        };
        // Only subscribed once what the store may have lost is written back (an unsubscribed
        // replica bypasses its cache and still checks its floors).
        let epoch = match epoch {
            Ok((pubsub, epoch)) => {
                let lost = known.as_ref().is_some_and(|k| *k != epoch);
                if lost {
                    tracing::warn!(
                        "redis lost its data (its epoch changed): writing back the \
                         revocations this replica knows of"
                    );
                }
                known = Some(epoch);
                if sink.resubscribed(lost).await {
                    Ok(pubsub)
                } else {
                    Err(StoreError::Unavailable(
                        "revocations not written back".into(),
                    ))
                }
            }
            Err(e) => Err(e),
        };
        if let Ok(pubsub) = epoch {
            backoff = Duration::from_millis(100);
            if let Ok(mut h) = heard.lock() {
                *h = Instant::now();
            }
            sink.subscribed(true);
            let mut messages = pubsub.into_on_message();
            loop {
                tokio::select! {
                    msg = messages.next() => {
                        let Some(msg) = msg else { break };
                        if let Ok(mut h) = heard.lock() {
                            *h = Instant::now();
                        }
                        let payload = msg.get_payload_bytes();
                        if payload != HEARTBEAT {
                            sink.event(payload).await;
                        }
                    }
                    () = restart.notified() => break,
                }
            }
            tracing::warn!(
                "redis subscription lost; bypassing the session cache until resubscribed"
            );
        }
        sink.subscribed(false);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Every second: publish a heartbeat (which is also the store's health probe), and restart a
/// subscription that has heard nothing for [`SILENCE_LIMIT`].
async fn prober(
    conn: Conn,
    timeout: Duration,
    sink: std::sync::Arc<dyn EventSink>,
    heard: std::sync::Arc<std::sync::Mutex<Instant>>,
    restart: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut conn = conn.clone();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(EVENTS_CHANNEL).arg(HEARTBEAT);
        let ok = matches!(
            tokio::time::timeout(timeout, cmd.query_async::<i64>(&mut conn)).await,
            Ok(Ok(_))
        );
        sink.store_reachable(ok);
        let silent = heard
            .lock()
            .map(|h| h.elapsed() > SILENCE_LIMIT)
            .unwrap_or(true);
        if silent {
            sink.subscribed(false);
            restart.notify_one();
        }
    }
}

/// `CONFIG GET` of the settings revocation depends on; a refused `CONFIG` (renamed, or
/// forbidden by an ACL, as on managed services) leaves them unknown.
async fn read_settings(conn: Conn, timeout: Duration) -> Result<StoreSettings, StoreError> {
    let mut out = StoreSettings::default();
    for (name, slot) in [
        ("maxmemory-policy", &mut out.maxmemory_policy),
        ("appendonly", &mut out.appendonly),
        ("appendfsync", &mut out.appendfsync),
    ] {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg(name);
        let mut conn = conn.clone();
        match tokio::time::timeout(timeout, cmd.query_async::<Vec<String>>(&mut conn)).await {
            Ok(Ok(pair)) => *slot = pair.get(1).cloned(),
            // A refusal (`CONFIG` renamed or forbidden by ACL): unknown, not an outage.
            Ok(Err(e)) if e.code().is_some() => *slot = None,
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(StoreError::Unavailable("redis timed out".into())),
        }
    }
    Ok(out)
}
