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
        // Ids are never empty; profile fields may be.
        for (v, min, max) in [
            (&m.business_id, 1, 256),
            (&m.platform_type, 1, 256),
            (&m.platform_id, 1, 256),
            (&m.role, 1, 256),
            (&m.profile_name, 0, 256),
            (&m.display_name, 0, 256),
            (&m.profile_image_url, 0, 2048),
        ] {
            let n = v.chars().count();
            assert!(n >= min && n <= max, "{v:?}");
        }
        assert!(m.business_id.bytes().all(|b| (0x20..0x7f).contains(&b)));
        assert!(m.role.bytes().all(|b| (0x20..0x7f).contains(&b)));
    }
    if let Ok(a) = amity::parse(body) {
        // It becomes x-hasura-user-id: never empty, no control characters, nothing a header
        // parser would trim.
        assert!(sessiongate::header_names::is_identity_value(&a.user_id));
        assert!(!a.user_id.chars().any(char::is_control));
        assert!(!a.user_id.starts_with(char::is_whitespace) && !a.user_id.ends_with(char::is_whitespace));
        assert!((1..=50).contains(&a.user_id.chars().count()));
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
            match &r.customer {
                rapidly::CustomerRef::Id(id) => assert!(is_uuid4(id), "{id}"),
                rapidly::CustomerRef::External(e) => assert!(e.chars().count() <= 256),
            }
            if !member {
                assert!(r.member_id.is_none() && r.external_member_id.is_none());
            }
        }
    }
});
