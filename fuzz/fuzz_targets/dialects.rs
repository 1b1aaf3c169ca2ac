//! The three dialects' request parsers: never panic, and never accept what their documented
//! limits reject.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sessiongate::config::dialects::is_uuid4;
use sessiongate::dialect::{amity, mottasl, rapidly};

fuzz_target!(|data: &[u8]| {
    let (query, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    if let Ok(m) = mottasl::parse(query, body) {
        for (v, max) in [
            (&m.business_id, 256),
            (&m.platform_type, 256),
            (&m.platform_id, 256),
            (&m.role, 256),
            (&m.profile_name, 256),
            (&m.display_name, 256),
            (&m.profile_image_url, 2048),
        ] {
            let n = v.chars().count();
            assert!(n >= 1 && n <= max, "{v:?}");
        }
        assert!(m.business_id.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert!(m.role.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
    if let Ok(a) = amity::parse(body) {
        assert!(!a.user_id.is_empty());
        let n = a.device_id.chars().count();
        assert!((1..=150).contains(&n));
        assert!(a
            .display_name
            .as_ref()
            .is_none_or(|d| d.chars().count() <= 100));
        assert!(a
            .auth_token
            .as_ref()
            .is_none_or(|t| (1..=100).contains(&t.chars().count())));
    }
    for member in [false, true] {
        if let Ok(r) = rapidly::parse(body, member) {
            assert!(is_uuid4(&r.customer_id), "{}", r.customer_id);
            if !member {
                assert!(r.member_id.is_none() && r.external_member_id.is_none());
            }
        }
    }
});
