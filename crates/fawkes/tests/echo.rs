//! `fawkes::websocket::echo` on real loopback sockets: an independent client
//! (tokio-tungstenite) for the protocol, raw frames for permessage-deflate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use fawkes::websocket::{echo, EchoConfig};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// Serves the echo at `/echo`, through `fawkes::serve` or `axum::serve`.
async fn serve(config: EchoConfig, fawkes_serve: bool) -> SocketAddr {
    let app = axum::Router::new().route("/echo", echo(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    if fawkes_serve {
        tokio::spawn(async move { fawkes::serve(listener, app).await });
    } else {
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    addr
}

async fn next(ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next()).await.expect("in time").expect("open").unwrap()
}

#[tokio::test]
async fn echoes_text_as_text_and_binary_as_binary_and_completes_the_close_handshake() {
    for fawkes_serve in [false, true] {
        let addr = serve(EchoConfig::default(), fawkes_serve).await;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/echo")).await.unwrap();
        ws.send(Message::text("héllo")).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text("héllo"));
        ws.send(Message::binary(vec![0u8, 255, 7])).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::binary(vec![0u8, 255, 7]));
        ws.send(Message::Ping(Bytes::from_static(b"p"))).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::Pong(Bytes::from_static(b"p")));
        ws.send(Message::Close(Some(CloseFrame { code: CloseCode::Library(4001), reason: "done".into() })))
            .await
            .unwrap();
        match next(&mut ws).await {
            Message::Close(Some(c)) => assert_eq!(c.code, CloseCode::Library(4001)),
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn takes_messages_up_to_its_limit_and_closes_with_1009_beyond() {
    let mut config = EchoConfig::default();
    config.max_message_size = 12 << 20;
    let addr = serve(config, true).await;
    let client = WebSocketConfig::default().max_message_size(None).max_frame_size(None);
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/echo"), Some(client), false).await.unwrap();
    let big: Vec<u8> = (0..12 << 20).map(|i: u32| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(big));
    ws.send(Message::binary(vec![0u8; (12 << 20) + 1])).await.unwrap();
    match next(&mut ws).await {
        Message::Close(Some(c)) => assert_eq!(c.code, CloseCode::Size),
        other => panic!("{other:?}"),
    }
}

/// Opens a raw connection with this `Sec-WebSocket-Extensions` offer;
/// returns it and the response's head (lowercased).
async fn open_raw(addr: SocketAddr, offer: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /echo HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\nsec-websocket-extensions: {offer}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap().to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    (s, head)
}

/// Sends a masked frame, RSV1 set when `compressed`.
async fn send_frame(s: &mut TcpStream, opcode: u8, compressed: bool, payload: &[u8]) {
    use fawkes_ws::frame::{apply_mask, Header, Opcode};
    let mask = [9, 8, 7, 6];
    let mut wire = Vec::new();
    let opcode = Opcode::from_u8(opcode).unwrap();
    Header { fin: true, rsv1: compressed, opcode, mask: Some(mask), len: payload.len() as u64 }.write(&mut wire);
    let at = wire.len();
    wire.extend_from_slice(payload);
    apply_mask(&mut wire[at..], mask, 0);
    s.write_all(&wire).await.unwrap();
}

/// Reads one server frame: its first byte and its payload, decompressed
/// when RSV1 is set.
async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await.expect("in time").unwrap();
    let len = match head[1] {
        126 => usize::from(s.read_u16().await.unwrap()),
        127 => s.read_u64().await.unwrap() as usize,
        n => usize::from(n),
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    if head[0] & 0x40 != 0 {
        payload = fawkes_ws::deflate::decompress(&payload, 1 << 20).unwrap();
    }
    (head[0], payload)
}

#[tokio::test]
async fn permessage_deflate_both_ways_and_a_limited_server_window_gets_plain_messages() {
    let addr = serve(EchoConfig::default(), true).await;
    let text = "compress me, compress me, compress me ".repeat(20);
    let (mut s, head) = open_raw(addr, "permessage-deflate; client_max_window_bits").await;
    assert!(head.contains(
        "sec-websocket-extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
    ));
    send_frame(&mut s, 1, true, &fawkes_ws::deflate::compress(text.as_bytes())).await;
    assert_eq!(read_frame(&mut s).await, (0xC1, text.clone().into_bytes()));
    send_frame(&mut s, 1, false, text.as_bytes()).await;
    assert_eq!(read_frame(&mut s).await, (0xC1, text.clone().into_bytes()));

    let (mut s, head) = open_raw(addr, "permessage-deflate; server_max_window_bits=9").await;
    assert!(head.contains("server_max_window_bits=9\r\n"), "{head}");
    send_frame(&mut s, 1, true, &fawkes_ws::deflate::compress(text.as_bytes())).await;
    assert_eq!(read_frame(&mut s).await, (0x81, text.clone().into_bytes()));

    // compression off: the offer is declined, and a compressed frame is a
    // protocol error
    let mut config = EchoConfig::default();
    config.compress = false;
    let addr = serve(config, true).await;
    let (mut s, head) = open_raw(addr, "permessage-deflate").await;
    assert!(!head.contains("sec-websocket-extensions"));
    send_frame(&mut s, 1, true, &fawkes_ws::deflate::compress(text.as_bytes())).await;
    let (first, payload) = read_frame(&mut s).await;
    assert_eq!((first, u16::from_be_bytes([payload[0], payload[1]])), (0x88, 1002));
}

#[tokio::test]
async fn invalid_text_is_closed_with_1007() {
    let addr = serve(EchoConfig::default(), false).await;
    let (mut s, _) = open_raw(addr, "x-unknown").await;
    send_frame(&mut s, 1, false, b"ok \xff").await;
    let (first, payload) = read_frame(&mut s).await;
    assert_eq!((first, u16::from_be_bytes([payload[0], payload[1]])), (0x88, 1007));
    // then the server closes the connection
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await.unwrap().unwrap();
    assert!(rest.is_empty());
}
