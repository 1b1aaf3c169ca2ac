//! The proxy's hot path without sockets: the client's address and whether it is refused,
//! verify the access token, find its session in the cache (a hit), rewrite the identity
//! headers. Target: ≤ 5 µs median for the whole path.

use criterion::{criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;
use sessiongate::client_ip::client_ip;
use sessiongate::config::Config;
use sessiongate::headers::rewrite;
use sessiongate::session::model::NewSession;
use std::collections::HashMap;
use std::hint::black_box;

const CONFIG: &str = include_str!("../config/sessiongate.toml");

fn request() -> RequestHeader {
    let mut req = match RequestHeader::build("POST", b"/v1/graphql", None) {
        Ok(r) => r,
        Err(e) => panic!("request: {e}"),
    };
    for (k, v) in [
        ("host", "api.example.com"),
        ("content-type", "application/json"),
        ("user-agent", "bench"),
        ("accept", "*/*"),
        ("x-hasura-role", "admin"),
        ("X_Hasura_User_Id", "spoof"),
    ] {
        let _ = req.append_header(k, v);
    }
    req
}

/// A current-thread runtime and the gateway built from the shipped config (memory store).
fn runtime_and_app() -> (tokio::runtime::Runtime, std::sync::Arc<sessiongate::App>) {
    let env: HashMap<String, String> = HashMap::new();
    let config = match Config::from_toml(CONFIG, &env) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    };
    let app = match sessiongate::build_app(config) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    };
    (rt, app)
}

fn hot_path(c: &mut Criterion) {
    let (rt, app) = runtime_and_app();
    let issued = match rt.block_on(app.sessions.create(NewSession::new(
        "admin",
        "user-1".into(),
        "550e8400-e29b-41d4-a716-446655440000".into(),
        "host-1".into(),
        "user".into(),
        3600,
    ))) {
        Ok(i) => i,
        Err(e) => panic!("{e}"),
    };
    let token = issued.access_token;
    // Warm the cache: the bench measures hits.
    if let Err(e) = rt.block_on(app.sessions.authenticate(&token)) {
        panic!("{e}");
    }
    let template = request();
    let peer = std::net::IpAddr::from([192, 0, 2, 10]);

    c.bench_function("verify_token", |b| {
        b.iter(|| black_box(app.sessions.keys().verify(black_box(&token))))
    });
    c.bench_function("rewrite_headers", |b| {
        b.iter_batched(
            || template.clone(),
            |mut req| {
                if let Ok(identity) = app.hasura.identity_for(&issued.session, &token) {
                    let _ = rewrite(&mut req, Some(&identity), "bench-request-id");
                }
                req
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("hot_path_verify_cache_hit_rewrite", |b| {
        b.iter_batched(
            || template.clone(),
            |mut req| {
                rt.block_on(async {
                    // As the proxy does: the client's address, is it refused, then the token.
                    let ip = client_ip(peer, &req.headers, &app.config.proxy.trusted_proxies);
                    if app.limits.blocked(black_box(ip)).is_some() {
                        return;
                    }
                    if let Ok(session) = app.sessions.authenticate(black_box(&token)).await {
                        if let Ok(identity) = app.hasura.identity_for(&session, &token) {
                            let _ = rewrite(&mut req, Some(&identity), "bench-request-id");
                        }
                    }
                });
                req
            },
            criterion::BatchSize::SmallInput,
        )
    });
}

/// Session creation through each dialect, without sockets: parsing alone, and Mottasl's
/// whole handler (credential lookup, parse, user upsert, token signing, store write) on the
/// memory store.
fn dialects(c: &mut Criterion) {
    use sessiongate::dialect::{self, amity, mottasl, rapidly};
    use sessiongate::endpoint::{self, Endpoint};
    let mottasl_body = include_bytes!("../tests/fixtures/dialects/mottasl/request.json");
    let amity_body = include_bytes!("../tests/fixtures/dialects/amity/request.json");
    let rapidly_body = include_bytes!("../tests/fixtures/dialects/rapidly/request.json");
    c.bench_function("parse_mottasl", |b| {
        b.iter(|| black_box(mottasl::parse(Some("host_id=xyz"), black_box(mottasl_body))))
    });
    c.bench_function("parse_amity", |b| {
        b.iter(|| black_box(amity::parse(black_box(amity_body))))
    });
    c.bench_function("parse_rapidly", |b| {
        b.iter(|| black_box(rapidly::parse(black_box(rapidly_body), false)))
    });

    let (rt, app) = runtime_and_app();
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_static("Bearer dev-mottasl-token"),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let method = http::Method::POST;
    c.bench_function("mottasl_new_session_memory_store", |b| {
        b.iter(|| {
            let req = dialect::Request {
                path: "/v1/app/user.new.session",
                method: &method,
                query: Some("host_id=xyz"),
                headers: &headers,
                body: mottasl_body,
                client_ip: std::net::IpAddr::from([127, 0, 0, 1]),
                via_trusted_proxy: false,
                peer: std::net::IpAddr::from([127, 0, 0, 1]),
            };
            let reply = rt.block_on(endpoint::handle(&app, Endpoint::MottaslNewSession, &req));
            assert_eq!(reply.status, 200);
            reply
        })
    });
}

criterion_group!(benches, hot_path, dialects);
criterion_main!(benches);
