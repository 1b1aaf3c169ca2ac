//! Cross-origin requests from browsers (CORS), decided once per request from `[cors]`.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) carries no
//! credential by design, so the gateway answers it itself, on every route, before routing
//! or authentication, and it never reaches the upstream. Every other response to an allowed
//! origin — forwarded, a session API's, or a refusal (401/403/429/503) — carries
//! `Access-Control-Allow-Origin`, so the app can read errors too. A disallowed origin gets no
//! `Access-Control-Allow-*` header anywhere. While CORS is on the gateway owns these headers:
//! the upstream's are dropped, so a permissive backend cannot widen the policy.

use crate::config::{CorsConfig, OriginRule};
use http::header::{HeaderValue, ORIGIN};
use http::Method;
use pingora::http::RequestHeader;

/// Headers to add to a response: `(name, value)`.
pub type Headers = Vec<(&'static str, HeaderValue)>;

/// The policy, with its header values built once.
#[derive(Debug)]
pub struct Cors {
    cfg: CorsConfig,
    allow_headers: HeaderValue,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
}

/// What a request is, for CORS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to add (CORS off; [`Cors::verdict`] itself never answers this).
    None,
    /// A preflight: answer it with these headers (none but `Vary` for a disallowed origin).
    Preflight {
        /// Whether the origin is allowed (204) or not (403).
        allowed: bool,
        /// The response headers.
        headers: Headers,
    },
    /// A request from a browser: add these headers to whatever the response is.
    Request(Headers),
}

impl Cors {
    /// The policy, or `None` when no origin is configured (CORS off).
    pub fn new(cfg: &CorsConfig) -> Option<Cors> {
        if !cfg.enabled() {
            return None;
        }
        let join = |list: &[String]| HeaderValue::from_str(&list.join(", ")).ok();
        Some(Cors {
            cfg: cfg.clone(),
            allow_headers: join(&cfg.allowed_headers).unwrap_or(HeaderValue::from_static("")),
            expose_headers: join(&cfg.exposed_headers).filter(|v| !v.is_empty()),
            max_age: HeaderValue::from(cfg.max_age.as_secs()),
        })
    }

    /// What `req` is, and the headers its response gets.
    pub fn verdict(&self, req: &RequestHeader) -> Verdict {
        let mut origins = req.headers.get_all(ORIGIN).iter();
        let (Some(origin), None) = (origins.next(), origins.next()) else {
            // No origin (not a cross-origin browser request), or two (not a browser): nothing
            // allowed, but the answer still varies by origin for any cache in between.
            return Verdict::Request(vary());
        };
        let allow = self.allow_origin(origin);
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD);
        let mut headers = vary();
        if preflight {
            headers.push((
                "vary",
                HeaderValue::from_static(
                    "access-control-request-method, access-control-request-headers",
                ),
            ));
        }
        let Some(allow) = allow else {
            return if preflight {
                Verdict::Preflight {
                    allowed: false,
                    headers,
                }
            } else {
                Verdict::Request(headers)
            };
        };
        headers.push(("access-control-allow-origin", allow));
        if self.cfg.allow_credentials {
            headers.push((
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            ));
        }
        if !preflight {
            if let Some(expose) = &self.expose_headers {
                headers.push(("access-control-expose-headers", expose.clone()));
            }
            return Verdict::Request(headers);
        }
        // The method asked for, when it is one (browsers check it against this list).
        let method = req
            .headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .filter(|m| Method::from_bytes(m.as_bytes()).is_ok())
            .cloned()
            .unwrap_or(HeaderValue::from_static("GET"));
        headers.push(("access-control-allow-methods", method));
        headers.push(("access-control-allow-headers", self.allow_headers.clone()));
        headers.push(("access-control-max-age", self.max_age.clone()));
        Verdict::Preflight {
            allowed: true,
            headers,
        }
    }

    /// `Access-Control-Allow-Origin` for an allowed origin: `*` for `*` without
    /// credentials (cacheable across origins), else the origin itself.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        let rule = self.cfg.allowed_origins.iter().find(|r| r.matches(&text))?;
        if *rule == OriginRule::Any && !self.cfg.allow_credentials {
            return Some(HeaderValue::from_static("*"));
        }
        // `null` (sandboxed frames, file://) is never reflected: it would grant every such
        // document at once.
        (text != "null").then(|| origin.clone())
    }
}

/// Whether a response header is one the gateway owns while CORS is on.
pub fn is_cors_header(name: &str) -> bool {
    name.len() > 15 && name[..15].eq_ignore_ascii_case("access-control-")
}

fn vary() -> Headers {
    vec![("vary", HeaderValue::from_static("origin"))]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(origins: Vec<OriginRule>, credentials: bool) -> Option<Cors> {
        Cors::new(&CorsConfig {
            allowed_origins: origins,
            allowed_headers: vec!["authorization".into(), "x-api-key".into()],
            exposed_headers: vec!["x-request-id".into()],
            allow_credentials: credentials,
            max_age: Duration::from_secs(600),
        })
    }

    fn req(method: &str, headers: &[(&str, &str)]) -> Result<RequestHeader, Box<pingora::Error>> {
        let mut r = RequestHeader::build(method, b"/v1/graphql", None)?;
        for (k, v) in headers {
            r.append_header(k.to_string(), *v)?;
        }
        Ok(r)
    }

    fn get<'a>(h: &'a Headers, name: &str) -> Vec<&'a str> {
        h.iter()
            .filter(|(n, _)| *n == name)
            .filter_map(|(_, v)| v.to_str().ok())
            .collect()
    }

    #[test]
    fn preflights_and_requests() -> Result<(), Box<pingora::Error>> {
        let app = OriginRule::Exact("https://app.example.com".into());
        assert!(policy(Vec::new(), false).is_none());
        let Some(cors) = policy(vec![app], false) else {
            panic!("CORS should be on");
        };
        let pre = cors.verdict(&req(
            "OPTIONS",
            &[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "POST"),
            ],
        )?);
        let Verdict::Preflight {
            allowed: true,
            headers,
        } = pre
        else {
            panic!("{pre:?}");
        };
        assert_eq!(
            get(&headers, "access-control-allow-origin"),
            vec!["https://app.example.com"]
        );
        assert_eq!(get(&headers, "access-control-allow-methods"), vec!["POST"]);
        assert_eq!(
            get(&headers, "access-control-allow-headers"),
            vec!["authorization, x-api-key"]
        );
        assert_eq!(get(&headers, "access-control-max-age"), vec!["600"]);
        assert!(get(&headers, "vary").contains(&"origin"));
        // A disallowed origin: a preflight refused, with no Access-Control-Allow-*.
        let pre = cors.verdict(&req(
            "OPTIONS",
            &[
                ("origin", "https://evil.net"),
                ("access-control-request-method", "POST"),
            ],
        )?);
        let Verdict::Preflight {
            allowed: false,
            headers,
        } = pre
        else {
            panic!("{pre:?}");
        };
        assert!(headers
            .iter()
            .all(|(n, _)| !n.starts_with("access-control-allow")));
        // A plain request from the allowed origin, and one from another.
        let Verdict::Request(h) =
            cors.verdict(&req("POST", &[("origin", "https://app.example.com")])?)
        else {
            panic!("a request");
        };
        assert_eq!(
            get(&h, "access-control-expose-headers"),
            vec!["x-request-id"]
        );
        let Verdict::Request(h) = cors.verdict(&req("POST", &[("origin", "https://evil.net")])?)
        else {
            panic!("a request");
        };
        assert_eq!(h.len(), 1);
        // No Origin: only Vary. OPTIONS without Access-Control-Request-Method: not a preflight.
        assert_eq!(cors.verdict(&req("GET", &[])?), Verdict::Request(vary()));
        assert!(matches!(
            cors.verdict(&req("OPTIONS", &[("origin", "https://app.example.com")])?),
            Verdict::Request(_)
        ));
        // Two Origin headers: no browser sends them; nothing allowed.
        let Verdict::Request(h) = cors.verdict(&req(
            "GET",
            &[
                ("origin", "https://app.example.com"),
                ("origin", "https://app.example.com"),
            ],
        )?) else {
            panic!("a request");
        };
        assert_eq!(h.len(), 1);
        Ok(())
    }

    #[test]
    fn any_origin_and_credentials() -> Result<(), Box<pingora::Error>> {
        let Some(any) = policy(vec![OriginRule::Any], false) else {
            panic!("on");
        };
        let Verdict::Request(h) = any.verdict(&req("GET", &[("origin", "https://x.net")])?) else {
            panic!("a request");
        };
        assert_eq!(get(&h, "access-control-allow-origin"), vec!["*"]);
        let Some(creds) = policy(vec![OriginRule::Exact("https://x.net".into())], true) else {
            panic!("on");
        };
        let Verdict::Request(h) = creds.verdict(&req("GET", &[("origin", "https://x.net")])?)
        else {
            panic!("a request");
        };
        assert_eq!(
            get(&h, "access-control-allow-origin"),
            vec!["https://x.net"]
        );
        assert_eq!(get(&h, "access-control-allow-credentials"), vec!["true"]);
        assert!(is_cors_header("Access-Control-Allow-Origin"));
        assert!(!is_cors_header("access-control"));
        Ok(())
    }
}
