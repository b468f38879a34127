//! `check_origin` with Phoenix's semantics.

use http::Uri;

use crate::config::CheckOrigin;

struct Parts<'a> {
    scheme: Option<&'a str>,
    host: &'a str,
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Parses `scheme://host[:port]` or `//host[:port]` (a pattern).
fn parse(s: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = match s.split_once("//") {
        Some(("", rest)) => (None, rest),
        Some((scheme, rest)) => (Some(scheme.strip_suffix(':')?), rest),
        None => return None,
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || p.is_empty() => (h, Some(p.parse().ok()?)),
        _ => (authority, None),
    };
    let port = port.or_else(|| scheme.and_then(default_port));
    Some(Parts { scheme, host, port })
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(base) => {
            host.eq_ignore_ascii_case(base)
                || host.to_ascii_lowercase().ends_with(&format!(".{}", base.to_ascii_lowercase()))
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// True when `origin` (the header's value) is allowed. `request` is the
/// request's scheme, host and port, for [`CheckOrigin::Conn`].
pub(crate) fn allowed(policy: &CheckOrigin, origin: &str, request: (&str, &str, Option<u16>)) -> bool {
    if let CheckOrigin::Custom(f) = policy {
        return origin.parse::<Uri>().map(|u| f(&u)).unwrap_or(false);
    }
    if matches!(policy, CheckOrigin::Off) {
        return true;
    }
    let Some(o) = parse(origin) else { return false };
    if o.host.is_empty() {
        return false;
    }
    match policy {
        CheckOrigin::Localhost => o.host.eq_ignore_ascii_case("localhost"),
        CheckOrigin::Hosts(hosts) => hosts.iter().any(|h| h.eq_ignore_ascii_case(o.host)),
        CheckOrigin::List(list) => list.iter().filter_map(|p| parse(p)).any(|p| {
            p.scheme.is_none_or(|s| Some(s) == o.scheme)
                && p.port.is_none_or(|port| Some(port) == o.port)
                && host_matches(p.host, o.host)
        }),
        CheckOrigin::Conn => {
            let (scheme, host, port) = request;
            o.scheme == Some(scheme)
                && o.host.eq_ignore_ascii_case(host)
                && o.port == port.or_else(|| default_port(scheme))
        }
        CheckOrigin::Custom(_) | CheckOrigin::Off => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: (&str, &str, Option<u16>) = ("http", "example.com", Some(4000));

    #[test]
    fn phoenix_list_semantics() {
        let list = CheckOrigin::List(vec![
            "//example.com".into(),
            "http://scheme.com".into(),
            "//port.com:81".into(),
            "//*.ex.com".into(),
        ]);
        for (origin, ok) in [
            ("https://example.com", true),
            ("http://example.com:8080", true),
            ("http://scheme.com", true),
            ("https://scheme.com", false),
            ("http://scheme.com:8080", false),
            ("http://port.com:81", true),
            ("http://port.com", false),
            ("https://ex.com", true),
            ("https://org1.ex.com", true),
            ("https://org1.prefix-ex.com", false),
            ("null", false),
            ("file://", false),
            ("", false),
        ] {
            assert_eq!(allowed(&list, origin, REQ), ok, "{origin}");
        }
    }

    #[test]
    fn default_conn_and_hosts() {
        assert!(allowed(&CheckOrigin::Localhost, "http://localhost:4000", REQ));
        assert!(!allowed(&CheckOrigin::Localhost, "http://evil.com", REQ));
        assert!(!allowed(&CheckOrigin::Localhost, "null", REQ));
        assert!(allowed(&CheckOrigin::Conn, "http://example.com:4000", REQ));
        assert!(!allowed(&CheckOrigin::Conn, "ws://example.com:4000", REQ));
        assert!(!allowed(&CheckOrigin::Conn, "http://example.com", REQ));
        assert!(allowed(&CheckOrigin::Hosts(vec!["127.0.0.1".into()]), "http://127.0.0.1:4000", REQ));
        assert!(allowed(&CheckOrigin::Off, "garbage", REQ));
    }
}
