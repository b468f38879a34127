//! Transports: WebSocket over HTTP/1.1 upgrades, and an in-memory one.

pub(crate) mod local;
pub(crate) mod longpoll;
pub(crate) mod websocket;
pub(crate) mod ws_codec;
pub(crate) mod ws_echo;
pub(crate) mod ws_handshake;
pub(crate) mod ws_io;
