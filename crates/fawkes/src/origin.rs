//! `check_origin` with Phoenix's semantics, and the request's own origin as
//! [`CheckOrigin::Conn`] sees it: the `Host` header, or what a trusted proxy
//! forwarded.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use http::{header, HeaderMap, Uri};

use crate::config::{CheckOrigin, ForwardedHeaders, SocketConfig, TrustedProxies};

struct Parts<'a> {
    scheme: Option<&'a str>,
    host: &'a str,
    port: Option<u16>,
}

pub(crate) fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss") {
        Some(443)
    } else {
        None
    }
}

/// `http` or `https` for a scheme a proxy reports (`ws` and `wss` name the
/// same origins); `None` for anything else.
fn web_scheme(s: &str) -> Option<&'static str> {
    match default_port(s)? {
        80 => Some("http"),
        _ => Some("https"),
    }
}

fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// Splits `host[:port]` or `[v6]` / `[v6]:port`; `None` when the port is not
/// a number or a bracket is unbalanced. The host is not validated.
pub(crate) fn split_authority(a: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if a.starts_with('[') {
        let (host, rest) = a.split_at(a.find(']')? + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    match port {
        Some(p) => Some((host, Some(parse_port(p)?))),
        None => Some((host, None)),
    }
}

fn bracketed_v6(host: &str) -> Option<Ipv6Addr> {
    host.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// A host as a URL's authority has it: a name or an IPv4 address (letters,
/// digits, `-._~`), or an IPv6 address in brackets.
pub(crate) fn valid_host(host: &str) -> bool {
    if host.starts_with('[') {
        return bracketed_v6(host).is_some();
    }
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// Hosts compare case-insensitively; IPv6 addresses by value.
fn same_host(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || matches!((bracketed_v6(a), bracketed_v6(b)), (Some(x), Some(y)) if x == y)
}

/// Parses `scheme://host[:port]` or `//host[:port]` (a pattern).
fn parse(s: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = match s.split_once("//") {
        Some(("", rest)) => (None, rest),
        Some((scheme, rest)) => (Some(scheme.strip_suffix(':')?), rest),
        None => return None,
    };
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = split_authority(authority)?;
    let port = port.or_else(|| scheme.and_then(default_port));
    Some(Parts { scheme, host, port })
}

fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(base) => {
            host.eq_ignore_ascii_case(base)
                || host.to_ascii_lowercase().ends_with(&format!(".{}", base.to_ascii_lowercase()))
        }
        None => same_host(pattern, host),
    }
}

fn same_scheme(origin: Option<&str>, scheme: &str) -> bool {
    origin.is_some_and(|s| s.eq_ignore_ascii_case(scheme))
}

/// True when `origin` (the header's value) is allowed. `request` is the
/// request's own origin, for [`CheckOrigin::Conn`] (which refuses without
/// one).
pub(crate) fn allowed(policy: &CheckOrigin, origin: &str, request: Option<&RequestOrigin>) -> bool {
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
        CheckOrigin::Hosts(hosts) => hosts.iter().any(|h| same_host(h, o.host)),
        CheckOrigin::List(list) => list.iter().filter_map(|p| parse(p)).any(|p| {
            p.scheme.is_none_or(|s| same_scheme(o.scheme, s))
                && p.port.is_none_or(|port| Some(port) == o.port)
                && host_matches(p.host, o.host)
        }),
        CheckOrigin::Url(urls) => urls
            .iter()
            .any(|u| same_scheme(o.scheme, u.scheme()) && same_host(o.host, u.host()) && o.port == Some(u.port())),
        CheckOrigin::Conn => {
            request.is_some_and(|r| same_scheme(o.scheme, &r.scheme) && same_host(o.host, &r.host) && o.port == r.port)
        }
        CheckOrigin::Custom(_) | CheckOrigin::Off => true,
    }
}

/// Phoenix's `check_origin` on a request: a request without an `Origin`
/// header is always allowed. The peer address (for trusted proxies) is
/// axum's `ConnectInfo<SocketAddr>`, when the server provides it.
pub(crate) fn request_allowed<B>(config: &SocketConfig, req: &http::Request<B>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else { return true };
    let Ok(origin) = origin.to_str() else { return false };
    let request = match config.check_origin {
        CheckOrigin::Conn => {
            let peer = req.extensions().get::<axum::extract::ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
            match request_origin(req.headers(), req.uri(), peer, config.trusted_proxies.as_ref()) {
                Ok(r) => Some(r),
                Err(Malformed) => return false,
            }
        }
        _ => None,
    };
    allowed(&config.check_origin, origin, request.as_ref())
}

/// A header that cannot be read as what it should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// The scheme, host and port a client used, as [`CheckOrigin::Conn`]
/// compares them; a port left out is the scheme's default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RequestOrigin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

/// The request's own origin: the URI's scheme (`http` when it has none, as
/// an HTTP/1.1 request) and the `Host` header (or the URI's authority);
/// from a trusted proxy, the scheme and host it forwarded instead.
pub(crate) fn request_origin(
    headers: &HeaderMap,
    uri: &Uri,
    peer: Option<IpAddr>,
    trusted: Option<&TrustedProxies>,
) -> Result<RequestOrigin, Malformed> {
    let mut scheme = uri.scheme_str().and_then(web_scheme).unwrap_or("http");
    let mut authority = match headers.get(header::HOST) {
        Some(h) => h.to_str().map_err(|_| Malformed)?.to_owned(),
        None => uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default(),
    };
    if let Some(proxies) = trusted.filter(|t| peer.is_some_and(|ip| t.contains(ip))) {
        let forwarded = forwarded_by(headers, proxies).inspect_err(|_| {
            tracing::warn!(?peer, "a trusted proxy sent malformed forwarded headers: the origin is refused");
        })?;
        if let Some(proto) = forwarded.proto {
            scheme = web_scheme(&proto).ok_or(Malformed)?;
        }
        if let Some(host) = forwarded.host {
            authority = host;
        }
    }
    let (host, port) = split_authority(&authority).filter(|(h, _)| valid_host(h)).ok_or(Malformed)?;
    let port = port.or_else(|| default_port(scheme));
    Ok(RequestOrigin { scheme: scheme.to_owned(), host: host.to_owned(), port })
}

/// What a proxy forwarded: the scheme and the host (with its port, if any)
/// the client used. A missing one is the request's own.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Forwarded {
    /// `for=` (RFC 7239 only): who connected to the proxy that wrote this.
    pub(crate) node: Option<String>,
    pub(crate) proto: Option<String>,
    pub(crate) host: Option<String>,
}

fn lines<'h>(headers: &'h HeaderMap, name: &str) -> Result<Vec<&'h str>, Malformed> {
    headers.get_all(name).iter().map(|v| v.to_str().map_err(|_| Malformed)).collect()
}

/// What the peer, a trusted proxy, forwarded in the headers it is trusted
/// for (see [`TrustedProxies`] for which value is used).
fn forwarded_by(headers: &HeaderMap, proxies: &TrustedProxies) -> Result<Forwarded, Malformed> {
    match proxies.headers() {
        ForwardedHeaders::XForwarded => Ok(Forwarded {
            node: None,
            proto: last_value(&lines(headers, "x-forwarded-proto")?)?.map(str::to_owned),
            host: last_value(&lines(headers, "x-forwarded-host")?)?.map(str::to_owned),
        }),
        ForwardedHeaders::Forwarded => {
            let hops = parse_forwarded(&lines(headers, "forwarded")?)?;
            Ok(outermost_trusted(&hops, proxies).cloned().unwrap_or_default())
        }
    }
}

/// The last value of a comma-separated header, over all its lines in order:
/// the one the nearest proxy set or appended. `None` when there is no line;
/// an empty value, or one with spaces inside, is malformed.
pub(crate) fn last_value<'a>(lines: &[&'a str]) -> Result<Option<&'a str>, Malformed> {
    let Some(line) = lines.last() else { return Ok(None) };
    let value = line.rsplit(',').next().unwrap_or("").trim_matches([' ', '\t']);
    if value.is_empty() || value.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        return Err(Malformed);
    }
    Ok(Some(value))
}

/// RFC 7230's `tchar`.
fn tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Parses `Forwarded` header lines (RFC 7239): one element per hop, client
/// first. Parameter names are case-insensitive; `by=` and extensions are
/// ignored; a value is a token or a quoted string (`host` and `for` with a
/// port or an IPv6 address need quotes, which are not insisted on). A
/// parameter given twice in one element, a missing `=`, an unterminated
/// quote or a stray character makes the whole header malformed.
pub(crate) fn parse_forwarded(lines: &[&str]) -> Result<Vec<Forwarded>, Malformed> {
    let mut hops = Vec::new();
    for line in lines {
        let mut chars = line.chars().peekable();
        let mut hop = Forwarded::default();
        let mut empty = true;
        loop {
            while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
            match chars.peek() {
                None => break,
                Some(',') => {
                    chars.next();
                    if !empty {
                        hops.push(std::mem::take(&mut hop));
                    }
                    empty = true;
                    continue;
                }
                Some(';') => {
                    chars.next();
                    continue;
                }
                Some(_) => {}
            }
            let mut name = String::new();
            while let Some(c) = chars.next_if(|&c| tchar(c)) {
                name.push(c);
            }
            if name.is_empty() || chars.next() != Some('=') {
                return Err(Malformed);
            }
            let mut value = String::new();
            if chars.next_if_eq(&'"').is_some() {
                loop {
                    match chars.next().ok_or(Malformed)? {
                        '"' => break,
                        '\\' => value.push(chars.next().ok_or(Malformed)?),
                        c if c.is_control() && c != '\t' => return Err(Malformed),
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|&c| tchar(c) || matches!(c, ':' | '[' | ']')) {
                    value.push(c);
                }
                if value.is_empty() {
                    return Err(Malformed);
                }
            }
            while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
            if !matches!(chars.peek(), None | Some(',' | ';')) {
                return Err(Malformed);
            }
            empty = false;
            let slot = match name.to_ascii_lowercase().as_str() {
                "for" => &mut hop.node,
                "proto" => &mut hop.proto,
                "host" => &mut hop.host,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(Malformed);
            }
        }
        if !empty {
            hops.push(hop);
        }
    }
    Ok(hops)
}

/// The address in a `for=` node (`192.0.2.43`, `192.0.2.43:4711`,
/// `[2001:db8::17]:4711`, `2001:db8::17`); `None` for `unknown` and
/// obfuscated names.
fn node_ip(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    let (host, _) = split_authority(node)?;
    match bracketed_v6(host) {
        Some(v6) => Some(IpAddr::V6(v6)),
        None => host.parse().ok(),
    }
}

/// The element written by the outermost of a chain of trusted proxies: the
/// last element was appended by the peer; while an element's `for=` is a
/// trusted proxy too, the one before it was appended by that proxy.
/// Elements before the chain, which anyone may have written, are not read.
pub(crate) fn outermost_trusted<'h>(hops: &'h [Forwarded], proxies: &TrustedProxies) -> Option<&'h Forwarded> {
    let mut chosen = None;
    for hop in hops.iter().rev() {
        chosen = Some(hop);
        if !hop.node.as_deref().and_then(node_ip).is_some_and(|ip| proxies.contains(ip)) {
            break;
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PublicUrl;
    use http::HeaderValue;

    fn req() -> RequestOrigin {
        RequestOrigin { scheme: "http".into(), host: "example.com".into(), port: Some(4000) }
    }

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
            assert_eq!(allowed(&list, origin, Some(&req())), ok, "{origin}");
        }
    }

    #[test]
    fn default_conn_and_hosts() {
        let r = req();
        let r = Some(&r);
        assert!(allowed(&CheckOrigin::Localhost, "http://localhost:4000", r));
        assert!(!allowed(&CheckOrigin::Localhost, "http://evil.com", r));
        assert!(!allowed(&CheckOrigin::Localhost, "null", r));
        assert!(allowed(&CheckOrigin::Conn, "http://example.com:4000", r));
        assert!(allowed(&CheckOrigin::Conn, "HTTP://EXAMPLE.com:4000", r));
        assert!(!allowed(&CheckOrigin::Conn, "ws://example.com:4000", r));
        assert!(!allowed(&CheckOrigin::Conn, "http://example.com", r));
        assert!(!allowed(&CheckOrigin::Conn, "http://example.com:4000", None));
        assert!(allowed(&CheckOrigin::Hosts(vec!["127.0.0.1".into()]), "http://127.0.0.1:4000", r));
        assert!(allowed(&CheckOrigin::Off, "garbage", r));
    }

    #[test]
    fn url_mode_compares_scheme_host_and_port_exactly() {
        let urls =
            CheckOrigin::urls(["https://chat.example.com", "http://[::1]:4000", "https://Other.Example:8443/app"])
                .unwrap();
        for (origin, ok) in [
            ("https://chat.example.com", true),
            ("https://chat.example.com:443", true),
            ("HTTPS://CHAT.EXAMPLE.COM", true),
            ("http://chat.example.com", false),
            ("https://chat.example.com:8443", false),
            ("https://evil.chat.example.com", false),
            ("https://chat.example.com.evil", false),
            ("http://evil.example:4000", false),
            ("http://[::1]:4000", true),
            ("http://[0:0::1]:4000", true),
            ("http://[::1]", false),
            ("http://[::2]:4000", false),
            ("https://other.example:8443", true),
            ("https://other.example", false),
            ("null", false),
            ("", false),
        ] {
            assert_eq!(allowed(&urls, origin, None), ok, "{origin}");
        }
        assert!(!allowed(&CheckOrigin::Url(vec![]), "https://chat.example.com", None));
    }

    #[test]
    fn public_urls_are_validated() {
        let u: PublicUrl = "http://Example.COM:80/".parse().unwrap();
        assert_eq!(
            (u.scheme(), u.host(), u.port(), u.to_string()),
            ("http", "example.com", 80, "http://example.com".into())
        );
        let u: PublicUrl = "https://[2001:db8::1]:8443".parse().unwrap();
        assert_eq!((u.host(), u.port(), u.to_string()), ("[2001:db8::1]", 8443, "https://[2001:db8::1]:8443".into()));
        for bad in [
            "chat.example.com",
            "//chat.example.com",
            "ftp://chat.example.com",
            "wss://chat.example.com",
            "https://",
            "https://chat.example.com:",
            "https://chat.example.com:99999",
            "https://chat.example.com:+1",
            "https://user@chat.example.com",
            "https://chat example.com",
            "https://[::1",
            "https://[nope]:80",
            "https://*.example.com",
        ] {
            assert!(matches!(bad.parse::<PublicUrl>(), Err(crate::OriginConfigError::Url { .. })), "{bad}");
        }
        assert_eq!(CheckOrigin::urls(Vec::<String>::new()).unwrap_err(), crate::OriginConfigError::NoUrls);
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let t = TrustedProxies::new(ForwardedHeaders::XForwarded, ["10.0.0.0/8", " 192.168.1.7 ", "fd00::/8", "::1"])
            .unwrap();
        for (ip, ok) in [
            ("10.1.2.3", true),
            ("11.0.0.1", false),
            ("192.168.1.7", true),
            ("192.168.1.8", false),
            ("fd12::1", true),
            ("fe80::1", false),
            ("::1", true),
            ("::ffff:10.0.0.9", true),
        ] {
            assert_eq!(t.contains(ip.parse().unwrap()), ok, "{ip}");
        }
        for bad in ["", "10.0.0.0/33", "localhost", "10.0.0.0/8/8", "1.2.3"] {
            assert_eq!(
                TrustedProxies::new(ForwardedHeaders::Forwarded, [bad]).unwrap_err(),
                crate::OriginConfigError::Proxy(bad.to_owned())
            );
        }
    }

    fn hop(node: Option<&str>, proto: Option<&str>, host: Option<&str>) -> Forwarded {
        Forwarded { node: node.map(Into::into), proto: proto.map(Into::into), host: host.map(Into::into) }
    }

    #[test]
    fn forwarded_values_parse() {
        assert_eq!(
            parse_forwarded(&[r#"for=192.0.2.60;proto=https;by=203.0.113.43;host="chat.example.com""#]).unwrap(),
            vec![hop(Some("192.0.2.60"), Some("https"), Some("chat.example.com"))]
        );
        // case-insensitive names, quoted pairs, IPv6 nodes and hosts, spaces
        // around separators, empty elements, several hops over two lines
        assert_eq!(
            parse_forwarded(&[
                r#"For="[2001:db8:cafe::17]:4711" ; PROTO=http, , host="a\"b""#,
                r#"for=unknown;host="[2001:db8::1]:8443";proto=HTTPS,for=_hidden"#,
            ])
            .unwrap(),
            vec![
                hop(Some("[2001:db8:cafe::17]:4711"), Some("http"), None),
                hop(None, None, Some("a\"b")),
                hop(Some("unknown"), Some("HTTPS"), Some("[2001:db8::1]:8443")),
                hop(Some("_hidden"), None, None),
            ]
        );
        assert_eq!(parse_forwarded(&[]).unwrap(), vec![]);
        assert_eq!(parse_forwarded(&[" , ;"]).unwrap(), vec![]);
        for bad in [
            "for",
            "for=",
            "=x",
            "for=\"abc",
            "for=\"abc\\",
            "for=a;for=b",
            "proto=https;PROTO=http",
            "for=a b",
            "for=a;proto",
            "host=\"a\"b",
            "host=a\"b\"",
            "for=a\u{1};proto=https",
            "host=\"a\u{7f}\"",
            "for=é",
            "for = a",
        ] {
            assert_eq!(parse_forwarded(&[bad]), Err(Malformed), "{bad:?}");
        }
    }

    #[test]
    fn forwarded_parsing_never_panics() {
        // every string of up to four characters over an alphabet of the
        // characters the parser treats specially
        let alphabet: Vec<char> = "=;,\"\\ [:]af\u{e9}".chars().collect();
        let mut inputs = vec![String::new()];
        let mut last = vec![String::new()];
        for _ in 0..4 {
            last = last.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            inputs.extend(last.iter().cloned());
        }
        let proxies = TrustedProxies::new(ForwardedHeaders::Forwarded, ["::/0", "0.0.0.0/0"]).unwrap();
        for s in &inputs {
            if let Ok(hops) = parse_forwarded(&[s, s]) {
                assert!(hops.len() <= 2 * (s.matches(',').count() + 1), "{s:?}");
                outermost_trusted(&hops, &proxies);
            }
            let _ = last_value(&[s]);
            let _ = split_authority(s);
            let _ = node_ip(s);
        }
    }

    #[test]
    fn the_outermost_trusted_proxy_s_element_is_used() {
        let proxies = TrustedProxies::new(ForwardedHeaders::Forwarded, ["10.0.0.0/8", "2001:db8::/32"]).unwrap();
        let hops = parse_forwarded(&[
            "for=198.51.100.1;proto=http;host=forged.example",
            "for=203.0.113.9;proto=https;host=chat.example.com",
            "for=\"10.0.0.2:5000\";proto=http;host=edge.internal",
            "for=\"[2001:db8::3]\";proto=http;host=inner.internal",
        ])
        .unwrap();
        assert_eq!(outermost_trusted(&hops, &proxies), Some(&hops[1]));
        assert_eq!(outermost_trusted(&hops[..1], &proxies), Some(&hops[0]));
        assert_eq!(outermost_trusted(&[], &proxies), None);
        // the client's own element is never reached through an untrusted hop
        let hops = parse_forwarded(&["for=10.0.0.9;host=forged.example, for=unknown;host=chat.example.com"]).unwrap();
        assert_eq!(outermost_trusted(&hops, &proxies).unwrap().host.as_deref(), Some("chat.example.com"));
    }

    #[test]
    fn last_values_are_the_nearest_proxy_s() {
        assert_eq!(last_value(&[]), Ok(None));
        assert_eq!(last_value(&["https"]), Ok(Some("https")));
        assert_eq!(last_value(&["http, https"]), Ok(Some("https")));
        assert_eq!(last_value(&["forged.example", "a.example,b.example:8443 "]), Ok(Some("b.example:8443")));
        for bad in ["", "https,", "https, ", "a b", "a\tb"] {
            assert_eq!(last_value(&[bad]), Err(Malformed), "{bad:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn origin_of(
        pairs: &[(&'static str, &str)],
        peer: &str,
        trusted: Option<&TrustedProxies>,
    ) -> Result<(String, String, Option<u16>), Malformed> {
        let uri: Uri = "/socket/websocket".parse().unwrap();
        request_origin(&headers(pairs), &uri, Some(peer.parse().unwrap()), trusted).map(|r| (r.scheme, r.host, r.port))
    }

    fn expect(scheme: &str, host: &str, port: u16) -> Result<(String, String, Option<u16>), Malformed> {
        Ok((scheme.into(), host.into(), Some(port)))
    }

    #[test]
    fn the_request_origin_comes_from_host_or_a_trusted_proxy() {
        let xf = TrustedProxies::new(ForwardedHeaders::XForwarded, ["10.0.0.0/8"]).unwrap();
        let fw = TrustedProxies::new(ForwardedHeaders::Forwarded, ["10.0.0.0/8"]).unwrap();
        let forged = [
            ("host", "app.internal:4000"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "chat.example.com"),
            ("forwarded", "proto=https;host=chat.example.com"),
        ];
        // no trusted proxies, or a peer that is not one: the Host header
        assert_eq!(origin_of(&forged, "10.0.0.1", None), expect("http", "app.internal", 4000));
        assert_eq!(origin_of(&forged, "192.0.2.1", Some(&xf)), expect("http", "app.internal", 4000));
        assert_eq!(origin_of(&forged, "192.0.2.1", Some(&fw)), expect("http", "app.internal", 4000));
        let uri: Uri = "/".parse().unwrap();
        let r = request_origin(&headers(&forged), &uri, None, Some(&xf)).unwrap();
        assert_eq!(r.scheme, "http", "no known peer is no trusted peer");
        // a trusted peer: only the headers it is trusted for
        assert_eq!(origin_of(&forged, "10.0.0.1", Some(&xf)), expect("https", "chat.example.com", 443));
        assert_eq!(origin_of(&forged, "::ffff:10.0.0.1", Some(&fw)), expect("https", "chat.example.com", 443));
        let only_forwarded = [("host", "app.internal:4000"), ("forwarded", "proto=https;host=chat.example.com")];
        assert_eq!(origin_of(&only_forwarded, "10.0.0.1", Some(&xf)), expect("http", "app.internal", 4000));
        // what the proxy leaves out is the request's own
        assert_eq!(
            origin_of(&[("host", "chat.example.com"), ("x-forwarded-proto", "wss")], "10.0.0.1", Some(&xf)),
            expect("https", "chat.example.com", 443)
        );
        assert_eq!(
            origin_of(&[("host", "chat.example.com:8080"), ("forwarded", "for=192.0.2.7")], "10.0.0.1", Some(&fw)),
            expect("http", "chat.example.com", 8080)
        );
        assert_eq!(
            origin_of(&[("host", "x"), ("x-forwarded-host", "[2001:DB8::1]:8443")], "10.0.0.1", Some(&xf)),
            expect("http", "[2001:DB8::1]", 8443)
        );
        assert_eq!(origin_of(&[("host", "[::1]")], "10.0.0.1", None), expect("http", "[::1]", 80));
        // malformed values from a trusted proxy refuse; the same from anyone
        // else are ignored
        for bad in [
            ("x-forwarded-proto", "ftp"),
            ("x-forwarded-proto", "https,"),
            ("x-forwarded-host", "chat example.com"),
            ("x-forwarded-host", "chat.example.com:https"),
            ("x-forwarded-host", "[::1"),
            ("x-forwarded-host", "a/b"),
        ] {
            let h = [("host", "app.internal"), bad];
            assert_eq!(origin_of(&h, "10.0.0.1", Some(&xf)), Err(Malformed), "{bad:?}");
            assert!(origin_of(&h, "192.0.2.1", Some(&xf)).is_ok(), "{bad:?}");
        }
        for bad in ["proto=https;host=\"chat", "proto=gopher", "host=\"a b\"", "proto=https;proto=http"] {
            let h = [("host", "app.internal"), ("forwarded", bad)];
            assert_eq!(origin_of(&h, "10.0.0.1", Some(&fw)), Err(Malformed), "{bad:?}");
        }
        assert_eq!(origin_of(&[], "10.0.0.1", None), Err(Malformed), "no host at all");
        assert_eq!(origin_of(&[("host", "a:b:c")], "10.0.0.1", None), Err(Malformed));
    }
}
