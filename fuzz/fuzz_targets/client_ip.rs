//! X-Forwarded-For: never panics; an untrusted peer is always the client; the result is the
//! peer or one of the listed hops.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::client_ip::client_ip;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let mut headers = http::HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        if let Ok(v) = http::HeaderValue::from_bytes(line) {
            headers.append("x-forwarded-for", v);
        }
    }
    let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
    let outsider = IpAddr::from([192, 0, 2, 1]);
    assert_eq!(client_ip(outsider, &headers, &trusted), outsider);
    let proxy = IpAddr::from([10, 0, 0, 1]);
    let got = client_ip(proxy, &headers, &trusted);
    if got != proxy {
        let listed = data
            .split(|b| *b == b'\n' || *b == b',')
            .filter_map(|hop| std::str::from_utf8(hop).ok())
            .filter_map(|hop| {
                let hop = hop.trim();
                hop.parse::<IpAddr>()
                    .or_else(|_| hop.parse::<std::net::SocketAddr>().map(|s| s.ip()))
                    .ok()
            })
            .any(|ip| ip.to_canonical() == got);
        assert!(listed, "{got} is neither the peer nor a listed hop");
    }
});
