//! The opening handshake's checks and answer, shared by every WebSocket
//! endpoint.

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderMap, HeaderValue, StatusCode};

use super::ws_codec::{accept_key, Negotiated};

/// Whether a header's comma-separated values hold `token` (any case).
pub(crate) fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the upgrade headers as Phoenix does, with its messages: the
/// `Sec-WebSocket-Accept` value, or the 400 to answer.
pub(crate) fn check_upgrade(headers: &HeaderMap) -> Result<String, (StatusCode, &'static str)> {
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err((StatusCode::BAD_REQUEST, "'connection' header must contain 'upgrade'"));
    }
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err((StatusCode::BAD_REQUEST, "'upgrade' header must contain 'websocket'"));
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err((StatusCode::BAD_REQUEST, "'sec-websocket-version' header must be 13"));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err((StatusCode::BAD_REQUEST, "'sec-websocket-key' header is missing"));
    };
    Ok(accept_key(key.as_bytes()))
}

/// The 101 answer: the accept value, the extension agreed on, and the
/// subprotocol to echo, if any.
pub(crate) fn switching_protocols(
    accept: &str,
    deflate: Option<&Negotiated>,
    protocol: Option<&'static str>,
) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(Ok(v)) = deflate.map(|d| HeaderValue::from_str(&d.response())) {
        h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    if let Some(p) = protocol {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    res
}
