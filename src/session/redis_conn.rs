//! One Redis command connection whatever the topology: standalone (a self-reconnecting
//! multiplexed connection), Cluster (redis-rs' cluster client: slot routing, MOVED/ASK,
//! topology refresh), or Sentinel (the current master, asked of the sentinels again
//! whenever the connection breaks or the server turns read-only after a failover).
//! Everything that uses it sees one [`redis::aio::ConnectionLike`].

use crate::config::RedisMode;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, TlsCertificates, TlsMode, Value,
};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::runtime::Handle;

/// Where and how to connect; URLs may hold passwords and are never logged.
#[derive(Clone)]
pub struct Topology {
    /// Topology.
    pub mode: RedisMode,
    /// One URL (standalone), seed nodes (cluster) or the sentinels (sentinel).
    pub urls: Vec<String>,
    /// CA certificate (PEM) for `rediss://`; system roots when `None`.
    pub tls_ca_pem: Option<Vec<u8>>,
    /// Connect and response timeout.
    pub timeout: Duration,
}

fn certs(ca: &Option<Vec<u8>>) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: ca.clone(),
    }
}

/// A client for one URL, with the configured CA when it is `rediss://`.
pub fn client_for(url: &str, ca: &Option<Vec<u8>>) -> RedisResult<Client> {
    if url.starts_with("rediss://") && ca.is_some() {
        Client::build_with_tls(url, certs(ca))
    } else {
        Client::open(url)
    }
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_secs(2))
}

/// A cluster connection made on first use (the gateway starts while Redis is down);
/// afterwards redis-rs keeps it routed and reconnected.
pub struct LazyCluster {
    client: ClusterClient,
    conn: tokio::sync::OnceCell<ClusterConnection>,
    io: Handle,
}

impl LazyCluster {
    async fn get(&self) -> RedisResult<ClusterConnection> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let client = self.client.clone();
                // Its background tasks belong on the store's own runtime.
                self.io
                    .spawn(async move { client.get_async_connection().await })
                    .await
                    .map_err(|e| RedisError::from((ErrorKind::Io, "connect task", e.to_string())))?
            })
            .await?;
        Ok(conn.clone())
    }
}

/// The master the sentinels currently name, re-resolved after a failover.
pub struct SentinelMaster {
    sentinels: Vec<String>,
    master: String,
    node: SentinelNodeConnectionInfo,
    current: RwLock<Option<(ConnectionManager, Client)>>,
    timeout: Duration,
    io: Handle,
}

impl SentinelMaster {
    async fn resolve(&self) -> RedisResult<(ConnectionManager, Client)> {
        if let Some(c) = self.current.read().ok().and_then(|g| g.clone()) {
            return Ok(c);
        }
        let mut sentinel = SentinelClient::build(
            self.sentinels.clone(),
            self.master.clone(),
            Some(self.node.clone()),
            SentinelServerType::Master,
        )?;
        let config = manager_config(self.timeout);
        let found = self
            .io
            .spawn(async move {
                let client = sentinel.async_get_client().await?;
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
                Ok::<_, RedisError>((manager, client))
            })
            .await
            .map_err(|e| RedisError::from((ErrorKind::Io, "resolve task", e.to_string())))??;
        if let Ok(mut g) = self.current.write() {
            *g = Some(found.clone());
        }
        Ok(found)
    }

    /// Forget the master after an error that suggests it moved; the next call asks again.
    fn observe(&self, e: &RedisError) {
        let moved = e.is_io_error()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
            || e.is_timeout()
            || matches!(e.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly));
        if moved {
            if let Ok(mut g) = self.current.write() {
                *g = None;
            }
        }
    }
}

/// The command connection.
#[derive(Clone)]
pub enum Conn {
    /// Standalone.
    Single(ConnectionManager),
    /// Cluster.
    Cluster(Arc<LazyCluster>),
    /// Sentinel.
    Sentinel(Arc<SentinelMaster>),
}

impl Conn {
    /// Builds the connection without connecting (that happens on first use).
    pub fn new(t: &Topology, io: &Handle) -> RedisResult<(Conn, Option<Client>)> {
        let first = t
            .urls
            .first()
            .ok_or_else(|| RedisError::from((ErrorKind::InvalidClientConfig, "no redis url")))?;
        match &t.mode {
            RedisMode::Standalone => {
                let client = client_for(first, &t.tls_ca_pem)?;
                let _guard = io.enter();
                let manager = ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    manager_config(t.timeout),
                )?;
                Ok((Conn::Single(manager), Some(client)))
            }
            RedisMode::Cluster => {
                let mut builder = ClusterClient::builder(t.urls.clone())
                    .connection_timeout(t.timeout)
                    .response_timeout(t.timeout)
                    .retries(2);
                if first.starts_with("rediss://") {
                    builder = builder.tls(TlsMode::Secure);
                    if t.tls_ca_pem.is_some() {
                        builder = builder.certs(certs(&t.tls_ca_pem));
                    }
                }
                let client = builder.build()?;
                Ok((
                    Conn::Cluster(Arc::new(LazyCluster {
                        client,
                        conn: tokio::sync::OnceCell::new(),
                        io: io.clone(),
                    })),
                    None,
                ))
            }
            RedisMode::Sentinel { master } => {
                // The sentinels' URLs carry the credentials (and db) used for the master too.
                let info = first.as_str().into_connection_info()?;
                let mut node = SentinelNodeConnectionInfo::default()
                    .set_redis_connection_info(info.redis_settings().clone());
                if first.starts_with("rediss://") {
                    node = node.set_tls_mode(TlsMode::Secure);
                }
                Ok((
                    Conn::Sentinel(Arc::new(SentinelMaster {
                        sentinels: t.urls.clone(),
                        master: master.clone(),
                        node,
                        current: RwLock::new(None),
                        timeout: t.timeout,
                        io: io.clone(),
                    })),
                    None,
                ))
            }
        }
    }

    /// A client to subscribe with: the server itself, the current master (sentinel), or a
    /// node (cluster: classic pub/sub messages reach every node). `attempt` rotates nodes.
    pub async fn pubsub_client(&self, t: &Topology, attempt: usize) -> RedisResult<Client> {
        match self {
            Conn::Single(_) => {
                let url = t.urls.first().map(String::as_str).unwrap_or_default();
                client_for(url, &t.tls_ca_pem)
            }
            Conn::Cluster(_) => {
                let n = t.urls.len().max(1);
                let url = t
                    .urls
                    .get(attempt % n)
                    .map(String::as_str)
                    .unwrap_or_default();
                client_for(url, &t.tls_ca_pem)
            }
            Conn::Sentinel(s) => Ok(s.resolve().await?.1),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self {
                Conn::Single(m) => m.req_packed_command(cmd).await,
                Conn::Cluster(c) => c.get().await?.req_packed_command(cmd).await,
                Conn::Sentinel(s) => {
                    let (mut m, _) = s.resolve().await?;
                    let r = m.req_packed_command(cmd).await;
                    if let Err(e) = &r {
                        s.observe(e);
                    }
                    r
                }
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self {
                Conn::Single(m) => m.req_packed_commands(pipeline, offset, count).await,
                Conn::Cluster(c) => {
                    c.get()
                        .await?
                        .req_packed_commands(pipeline, offset, count)
                        .await
                }
                Conn::Sentinel(s) => {
                    let (mut m, _) = s.resolve().await?;
                    let r = m.req_packed_commands(pipeline, offset, count).await;
                    if let Err(e) = &r {
                        s.observe(e);
                    }
                    r
                }
            }
        })
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(m) => m.get_db(),
            Conn::Cluster(_) | Conn::Sentinel(_) => 0,
        }
    }
}
