use crate::{
    binary, v1, v2, Broadcast, DecodeError, EncodeError, Frame, Message, Opcode, Reply, ServerFrame, VsnError,
};

/// A serializer version: V1 (JSON objects) or V2 (JSON arrays and binary frames).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vsn {
    /// `vsn` `~> 1.0.0`: JSON objects, no binary frames.
    V1,
    /// `vsn` `~> 2.0.0`: JSON arrays and binary frames.
    V2,
}

impl Vsn {
    /// Both serializers, in the order Phoenix tries them.
    pub const ALL: [Vsn; 2] = [Vsn::V1, Vsn::V2];

    /// Chooses the serializer for the `vsn` a client asked for, as Phoenix
    /// does: a missing `vsn` is V1; otherwise `vsn` must be a semantic version
    /// matching `~> 1.0.0` or `~> 2.0.0`.
    ///
    /// ```
    /// use fawkes_protocol::Vsn;
    /// assert_eq!(Vsn::negotiate(None), Ok(Vsn::V1));
    /// assert_eq!(Vsn::negotiate(Some("2.0.0")), Ok(Vsn::V2));
    /// assert_eq!(Vsn::negotiate(Some("2.0.7")), Ok(Vsn::V2));
    /// assert!(Vsn::negotiate(Some("2.1.0")).is_err());
    /// assert!(Vsn::negotiate(Some("3.0.0")).is_err());
    /// assert!(Vsn::negotiate(Some("2")).is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`VsnError::Invalid`] when `vsn` is not a semantic version,
    /// [`VsnError::Unsupported`] when no serializer accepts it.
    pub fn negotiate(vsn: Option<&str>) -> Result<Vsn, VsnError> {
        let Some(vsn) = vsn else { return Ok(Vsn::V1) };
        let v = SemVer::parse(vsn).ok_or_else(|| VsnError::Invalid(vsn.to_owned()))?;
        // `~> M.m.0` is `>= M.m.0 and < M.(m+1).0-0`: any patch of M.m, and
        // pre-releases only above patch 0.
        let matches = |major: u64| v.major == major && v.minor == 0 && (v.patch > 0 || !v.pre);
        if matches(1) {
            Ok(Vsn::V1)
        } else if matches(2) {
            Ok(Vsn::V2)
        } else {
            Err(VsnError::Unsupported(vsn.to_owned()))
        }
    }

    /// The `vsn` string a client sends for this serializer.
    pub fn as_str(self) -> &'static str {
        match self {
            Vsn::V1 => "1.0.0",
            Vsn::V2 => "2.0.0",
        }
    }

    /// Decodes a frame sent by a client.
    ///
    /// # Errors
    ///
    /// Any frame that is not a message of this serializer.
    pub fn decode(self, frame: &Frame) -> Result<Message, DecodeError> {
        match (self, frame.opcode) {
            (Vsn::V1, Opcode::Text) => v1::decode(&frame.data),
            (Vsn::V1, Opcode::Binary) => Err(DecodeError::BinaryUnsupported),
            (Vsn::V2, Opcode::Text) => v2::decode(&frame.data),
            (Vsn::V2, Opcode::Binary) => binary::decode_client_push(&frame.data),
        }
    }

    /// Encodes a server push (including `phx_close` and `phx_error`).
    ///
    /// # Errors
    ///
    /// With V2, a payload that is neither a JSON object nor binary, or binary
    /// fields over 255 bytes; with V1, a binary payload.
    pub fn encode_push(self, msg: &Message) -> Result<Frame, EncodeError> {
        match self {
            Vsn::V1 => v1::encode(&msg.topic, &msg.event, &msg.payload, msg.ref_.as_ref()),
            Vsn::V2 => {
                if msg.payload.is_binary() {
                    binary::encode_push(msg)
                } else if msg.payload.is_object() {
                    v2::encode(msg.join_ref.as_ref(), msg.ref_.as_ref(), &msg.topic, &msg.event, &msg.payload)
                } else {
                    Err(EncodeError::PayloadNotAnObject)
                }
            }
        }
    }

    /// Encodes a reply. A reply's response may be any JSON value.
    ///
    /// # Errors
    ///
    /// Binary fields over 255 bytes (V2), or a binary payload (V1).
    pub fn encode_reply(self, reply: &Reply) -> Result<Frame, EncodeError> {
        match self {
            Vsn::V1 => v1::encode_reply(reply),
            Vsn::V2 if reply.payload.is_binary() => binary::encode_reply(reply),
            Vsn::V2 => v2::encode_reply(reply),
        }
    }

    /// Encodes a broadcast (Phoenix's fastlane): no join ref, and no ref
    /// but the broadcast's history position, if it has one.
    ///
    /// # Errors
    ///
    /// As [`Vsn::encode_push`].
    pub fn encode_broadcast(self, b: &Broadcast) -> Result<Frame, EncodeError> {
        match self {
            Vsn::V1 => v1::encode(&b.topic, &b.event, &b.payload, b.position.as_ref()),
            Vsn::V2 if b.payload.is_binary() => binary::encode_broadcast(b),
            Vsn::V2 if b.payload.is_object() => v2::encode(None, b.position.as_ref(), &b.topic, &b.event, &b.payload),
            Vsn::V2 => Err(EncodeError::PayloadNotAnObject),
        }
    }

    /// Client side: encodes a message as a client sends it.
    ///
    /// # Errors
    ///
    /// Binary fields over 255 bytes (V2), or a binary payload (V1).
    pub fn encode_client(self, msg: &Message) -> Result<Frame, EncodeError> {
        match self {
            Vsn::V1 => v1::encode_client(msg),
            Vsn::V2 if msg.payload.is_binary() => binary::encode_client_push(msg),
            Vsn::V2 => v2::encode(msg.join_ref.as_ref(), msg.ref_.as_ref(), &msg.topic, &msg.event, &msg.payload),
        }
    }

    /// Client side: decodes a frame sent by a server.
    ///
    /// # Errors
    ///
    /// Any frame that this serializer's server would not send.
    pub fn decode_server(self, frame: &Frame) -> Result<ServerFrame, DecodeError> {
        match (self, frame.opcode) {
            (Vsn::V2, Opcode::Binary) => binary::decode_server(&frame.data),
            (Vsn::V1, Opcode::Binary) => Err(DecodeError::BinaryUnsupported),
            (vsn, Opcode::Text) => Ok(ServerFrame::from_message(vsn.decode(frame)?)),
        }
    }
}

struct SemVer {
    major: u64,
    minor: u64,
    patch: u64,
    pre: bool,
}

impl SemVer {
    fn parse(s: &str) -> Option<SemVer> {
        let core_end = s.find(['-', '+']).unwrap_or(s.len());
        let (core, rest) = s.split_at(core_end);
        let mut parts = core.split('.');
        let mut num = || -> Option<u64> {
            let p = parts.next()?;
            let valid = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (p == "0" || !p.starts_with('0'));
            if valid {
                p.parse().ok()
            } else {
                None
            }
        };
        let (major, minor, patch) = (num()?, num()?, num()?);
        if parts.next().is_some() {
            return None;
        }
        let (pre, build) = match rest.strip_prefix('-') {
            Some(r) => match r.split_once('+') {
                Some((p, b)) => (Some(p), Some(b)),
                None => (Some(r), None),
            },
            None => (None, rest.strip_prefix('+')),
        };
        if !rest.is_empty() && pre.is_none() && build.is_none() {
            return None;
        }
        let ident_ok =
            |x: &str| x.split('.').all(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if pre.is_some_and(|p| !ident_ok(p)) || build.is_some_and(|b| !ident_ok(b)) {
            return None;
        }
        Some(SemVer { major, minor, patch, pre: pre.is_some() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_like_elixir_version_match() {
        let cases = [
            ("1.0.0", Some(Vsn::V1)),
            ("1.0.9", Some(Vsn::V1)),
            ("2.0.0", Some(Vsn::V2)),
            ("2.0.1-rc.1", Some(Vsn::V2)),
            ("2.0.0+build.5", Some(Vsn::V2)),
            ("2.0.0-rc.1", None),
            ("2.1.0", None),
            ("2.1.0-rc.1", None),
            ("1.1.0", None),
            ("0.9.0", None),
            ("3.0.0", None),
            ("123.1.1", None),
            ("2", None),
            ("abc", None),
            ("", None),
            ("2.0", None),
            ("2.0.0.0", None),
            ("02.0.0", None),
            ("2.0.0-", None),
        ];
        for (vsn, want) in cases {
            assert_eq!(Vsn::negotiate(Some(vsn)).ok(), want, "{vsn}");
        }
        assert!(matches!(Vsn::negotiate(Some("2")), Err(VsnError::Invalid(_))));
        assert!(matches!(Vsn::negotiate(Some("3.0.0")), Err(VsnError::Unsupported(_))));
    }
}
