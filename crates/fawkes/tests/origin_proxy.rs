//! `check_origin` behind a reverse proxy. A small proxy written here stands
//! in front of the endpoint as a TLS-terminating one would: it reports
//! `https` (the browser's side is plain TCP in the test, nothing else
//! differs), replaces `Host` with the backend's address as nginx's
//! `proxy_pass` does, passes the browser's host on in `X-Forwarded-Host` or
//! `Forwarded`, and forwards the WebSocket upgrade byte for byte.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use fawkes::{CheckOrigin, ForwardedHeaders, TrustedProxies};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use support::{handler, http, serve, Log};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// Where browsers reach the chat.
const PUBLIC: &str = "https://chat.example.com";
const PUBLIC_HOST: &str = "chat.example.com";
/// A DNS-rebinding page: its name resolves to the server, and it is served
/// over plain HTTP on the app's port.
const REBOUND: &str = "http://evil.example:4000";
const REBOUND_HOST: &str = "evil.example:4000";

/// The address the trusted proxies connect from, and the range trusted.
const PROXY_IP: &str = "127.0.0.2";
const EDGE_IP: &str = "127.0.0.3";
const TRUSTED: &str = "127.0.0.2/31";
/// Clients connect from here, which is not trusted.
const CLIENT_IP: &str = "127.0.0.1";

#[derive(Clone, Copy)]
enum Style {
    /// Sets `X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-For`,
    /// dropping the client's.
    XForwarded,
    /// Appends an element to `Forwarded` (RFC 7239), and passes
    /// `X-Forwarded-*` on untouched.
    Forwarded,
}

/// Starts a proxy to `backend` that connects from `from` and reports
/// `proto`. Only the first request of a connection is rewritten; every
/// client here sends one.
async fn proxy(backend: SocketAddr, from: &str, style: Style, proto: &'static str) -> SocketAddr {
    let from: IpAddr = from.parse().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, peer)) = listener.accept().await {
            tokio::spawn(relay(client, peer, backend, from, style, proto));
        }
    });
    addr
}

async fn relay(
    mut client: TcpStream,
    peer: SocketAddr,
    backend: SocketAddr,
    from: IpAddr,
    style: Style,
    proto: &'static str,
) {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await.unwrap();
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).unwrap();
    let mut lines = head.split("\r\n").filter(|l| !l.is_empty());
    let mut out = format!("{}\r\nhost: {backend}\r\n", lines.next().unwrap());
    let mut host = String::new();
    for line in lines {
        let (name, value) = line.split_once(':').unwrap();
        match name.trim().to_ascii_lowercase().as_str() {
            "host" => host = value.trim().to_owned(),
            "x-forwarded-proto" | "x-forwarded-host" | "x-forwarded-for" if matches!(style, Style::XForwarded) => {}
            _ => out.push_str(&format!("{line}\r\n")),
        }
    }
    out.push_str(&match style {
        Style::XForwarded => {
            format!("x-forwarded-for: {}\r\nx-forwarded-proto: {proto}\r\nx-forwarded-host: {host}\r\n", peer.ip())
        }
        Style::Forwarded => format!("forwarded: for=\"{peer}\";proto={proto};host=\"{host}\"\r\n"),
    });
    out.push_str("\r\n");
    let socket = if from.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }.unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let mut upstream = socket.connect(backend).await.unwrap();
    upstream.write_all(out.as_bytes()).await.unwrap();
    upstream.write_all(&buf[head_end..]).await.unwrap();
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// A browser's WebSocket handshake to `addr` for `wss://<host>/socket`:
/// `Ok` once a heartbeat went there and back, `Err(status)` when refused.
async fn websocket(addr: SocketAddr, host: &str, origin: &str, extra: &[(&str, &str)]) -> Result<(), u16> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut req = format!("ws://{host}/socket/websocket?vsn=2.0.0").into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    for (k, v) in extra {
        req.headers_mut().append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
    }
    let mut ws = match tokio_tungstenite::client_async(req, stream).await {
        Ok((ws, _)) => ws,
        Err(WsError::Http(res)) => return Err(res.status().as_u16()),
        Err(e) => panic!("{e}"),
    };
    ws.send(Message::text(json!([null, "1", "phoenix", "heartbeat", {}]).to_string())).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert_eq!(reply, json!([null, "1", "phoenix", "phx_reply", {"response": {}, "status": "ok"}]));
    Ok(())
}

/// A long-poll client opening a session: `Ok` with its token, `Err` with
/// the status in the body when refused.
async fn longpoll(addr: SocketAddr, host: &str, origin: &str, extra: &[(&str, &str)]) -> Result<(), u64> {
    let mut headers = vec![("host", host), ("origin", origin)];
    headers.extend_from_slice(extra);
    let (status, _, body) = http(addr, "GET", "/socket/longpoll?vsn=2.0.0", &headers, b"").await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let body: Value = serde_json::from_slice(&body).unwrap();
    match body["status"].as_u64().unwrap() {
        410 => {
            assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()), "{body}");
            Ok(())
        }
        other => Err(other),
    }
}

/// Whether both transports accept the origin; they must agree.
async fn accepted(addr: SocketAddr, host: &str, origin: &str, extra: &[(&str, &str)]) -> bool {
    let ws = websocket(addr, host, origin, extra).await;
    let lp = longpoll(addr, host, origin, extra).await;
    match (ws, lp) {
        (Ok(()), Ok(())) => true,
        (Err(403), Err(403)) => false,
        other => panic!("the transports disagree for {origin} via {host}: {other:?}"),
    }
}

async fn endpoint(configure: impl FnOnce(&mut fawkes::SocketConfig)) -> SocketAddr {
    let (addr, _) = serve(handler(Log::default()).configure(|c| {
        c.longpoll = true;
        configure(c);
    }))
    .await;
    addr
}

fn trusting(headers: ForwardedHeaders) -> impl FnOnce(&mut fawkes::SocketConfig) {
    move |c| {
        c.check_origin = CheckOrigin::Conn;
        c.trusted_proxies = Some(TrustedProxies::new(headers, [TRUSTED]).unwrap());
    }
}

#[tokio::test]
async fn the_public_url_mode_accepts_the_browser_behind_a_proxy_and_refuses_rebinding() {
    let app = endpoint(|c| c.check_origin = CheckOrigin::urls([PUBLIC]).unwrap()).await;
    let front = proxy(app, CLIENT_IP, Style::XForwarded, "https").await;
    assert!(accepted(front, PUBLIC_HOST, PUBLIC, &[]).await);
    assert!(accepted(front, PUBLIC_HOST, "HTTPS://Chat.Example.COM:443", &[]).await);
    // the origin alone decides: the same browser straight to the app too
    assert!(accepted(app, PUBLIC_HOST, PUBLIC, &[]).await);
    for (host, origin) in [
        (REBOUND_HOST, REBOUND),
        (PUBLIC_HOST, "http://chat.example.com"),
        (PUBLIC_HOST, "https://chat.example.com:8443"),
        (PUBLIC_HOST, "https://evil.example"),
    ] {
        assert!(!accepted(front, host, origin, &[]).await, "{origin} via the proxy");
        assert!(!accepted(app, host, origin, &[]).await, "{origin} straight to the app");
    }
}

#[tokio::test]
async fn conn_mode_refuses_every_browser_behind_a_proxy_it_does_not_trust() {
    // Conn alone compares with `http` and the Host header, which the proxy
    // replaced with the backend's address
    let app = endpoint(|c| c.check_origin = CheckOrigin::Conn).await;
    let front = proxy(app, PROXY_IP, Style::XForwarded, "https").await;
    assert!(!accepted(front, PUBLIC_HOST, PUBLIC, &[]).await);
    // and, as Phoenix's `:conn`, it believes the Host header: a rebinding
    // page straight to the app matches it (why the URL mode exists)
    assert!(accepted(app, REBOUND_HOST, REBOUND, &[]).await);
}

#[tokio::test]
async fn conn_mode_believes_x_forwarded_headers_only_from_trusted_proxies() {
    let app = endpoint(trusting(ForwardedHeaders::XForwarded)).await;
    let front = proxy(app, PROXY_IP, Style::XForwarded, "https").await;
    assert!(accepted(front, PUBLIC_HOST, PUBLIC, &[]).await);
    // the client's own forwarded headers are replaced by the proxy's
    let forged = [("x-forwarded-proto", "http"), ("x-forwarded-host", REBOUND_HOST)];
    assert!(accepted(front, PUBLIC_HOST, PUBLIC, &forged).await);
    assert!(!accepted(front, PUBLIC_HOST, REBOUND, &forged).await);
    // a rebinding page's origin is plain HTTP; the proxy's listener is TLS
    assert!(!accepted(front, REBOUND_HOST, REBOUND, &[]).await);

    // the same headers from an untrusted peer are ignored
    let forged = [("x-forwarded-proto", "https"), ("x-forwarded-host", PUBLIC_HOST)];
    assert!(!accepted(app, "app.internal", PUBLIC, &forged).await);
    let untrusted = proxy(app, CLIENT_IP, Style::XForwarded, "https").await;
    assert!(!accepted(untrusted, PUBLIC_HOST, PUBLIC, &[]).await);
    // while the app's own origin still passes straight to it
    let own = format!("http://{app}");
    assert!(accepted(app, &app.to_string(), &own, &forged).await);

    // a trusted proxy that passes on a header it does not manage: a value
    // that cannot be read refuses the origin
    let passing = proxy(app, PROXY_IP, Style::Forwarded, "https").await;
    assert!(
        accepted(passing, PUBLIC_HOST, PUBLIC, &[("x-forwarded-proto", "https"), ("x-forwarded-host", PUBLIC_HOST)])
            .await
    );
    assert!(
        !accepted(
            passing,
            PUBLIC_HOST,
            PUBLIC,
            &[("x-forwarded-proto", "https"), ("x-forwarded-host", "chat.example.com:https")]
        )
        .await
    );
    assert!(
        !accepted(passing, PUBLIC_HOST, PUBLIC, &[("x-forwarded-proto", "gopher"), ("x-forwarded-host", PUBLIC_HOST)])
            .await
    );
}

#[tokio::test]
async fn conn_mode_reads_forwarded_from_the_outermost_trusted_proxy() {
    let app = endpoint(trusting(ForwardedHeaders::Forwarded)).await;
    let inner = proxy(app, PROXY_IP, Style::Forwarded, "https").await;
    assert!(accepted(inner, PUBLIC_HOST, PUBLIC, &[]).await);
    // an element the client wrote is before the proxy's, and not read
    let forged = [("forwarded", "for=198.51.100.7;proto=http;host=\"evil.example:4000\"")];
    assert!(accepted(inner, PUBLIC_HOST, PUBLIC, &forged).await);
    assert!(!accepted(inner, PUBLIC_HOST, REBOUND, &forged).await);
    assert!(!accepted(inner, REBOUND_HOST, REBOUND, &[]).await);

    // two trusted hops: the edge saw the browser over TLS, the inner proxy
    // saw the edge over plain HTTP; the edge's element is the one read
    let inner_plain = proxy(app, PROXY_IP, Style::Forwarded, "http").await;
    let edge = proxy(inner_plain, EDGE_IP, Style::Forwarded, "https").await;
    assert!(accepted(edge, PUBLIC_HOST, PUBLIC, &[]).await);
    // an edge that is not trusted: only the inner proxy's element counts
    let untrusted_edge = proxy(inner_plain, CLIENT_IP, Style::Forwarded, "https").await;
    assert!(!accepted(untrusted_edge, PUBLIC_HOST, PUBLIC, &[]).await);
    assert!(accepted(untrusted_edge, PUBLIC_HOST, &format!("http://{inner_plain}"), &[]).await);

    // from an untrusted peer, Forwarded is ignored
    let forged = [("forwarded", "for=198.51.100.7;proto=https;host=chat.example.com")];
    assert!(!accepted(app, "app.internal", PUBLIC, &forged).await);
    // a malformed header from a trusted proxy refuses the origin
    let malformed = [("forwarded", "for=198.51.100.7;proto=\"https")];
    assert!(!accepted(inner, PUBLIC_HOST, PUBLIC, &malformed).await);
}
