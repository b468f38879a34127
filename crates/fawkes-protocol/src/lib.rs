//! The Phoenix Channels wire protocol, without I/O.
//!
//! Phoenix clients speak one of two serializers, chosen by the `vsn` query
//! parameter of the connection ([`Vsn::negotiate`]):
//!
//! * **V1** (`vsn=1.0.0`, or no `vsn` at all): every frame is a JSON object
//!   `{"topic", "event", "payload", "ref", "join_ref"}`.
//! * **V2** (`vsn=2.0.0`, the default of the official JavaScript client): text
//!   frames are JSON arrays `[join_ref, ref, topic, event, payload]`, and binary
//!   payloads travel in binary frames with one-byte length prefixes.
//!
//! This crate decodes what clients send into a [`Message`] and encodes what the
//! server sends ([`Message`] pushes, [`Reply`] replies and [`Broadcast`]s) into
//! a [`Frame`], byte for byte as Phoenix does. It also has the client side of
//! each direction, for test harnesses and load tools.
//!
//! Refs and join refs are opaque JSON values ([`Ref`]): they are echoed back
//! exactly as received. Payloads ([`Payload`]) are either validated JSON text,
//! kept as bytes so that decoding and re-encoding them costs a copy at most, or
//! raw binary.
//!
//! No input makes the decoders panic; every failure is a [`DecodeError`].
//!
//! # Example
//!
//! ```
//! use fawkes_protocol::{Frame, Payload, Reply, Vsn};
//!
//! let vsn = Vsn::negotiate(Some("2.0.0")).unwrap();
//! let msg = vsn.decode(&Frame::text(r#"["1","2","room:lobby","ping",{"n":1}]"#)).unwrap();
//! assert_eq!(msg.topic, "room:lobby");
//! assert_eq!(msg.event, "ping");
//!
//! let reply = Reply::ok(&msg, msg.join_ref.clone(), Payload::from(serde_json::json!({"n": 1})));
//! let frame = vsn.encode_reply(&reply).unwrap();
//! assert_eq!(
//!     frame.as_text(),
//!     Some(r#"["1","2","room:lobby","phx_reply",{"response":{"n":1},"status":"ok"}]"#)
//! );
//! ```

mod binary;
mod error;
pub mod event;
mod frame;
mod json;
pub mod longpoll;
mod message;
mod payload;
mod v1;
mod v2;
mod vsn;

pub use error::{DecodeError, EncodeError, VsnError};
pub use frame::{Frame, Opcode};
pub use message::{Broadcast, Message, Ref, Reply, ServerFrame};
pub use payload::{IntoPayload, Json, Payload};
pub use vsn::Vsn;
