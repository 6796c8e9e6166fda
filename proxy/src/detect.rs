//! Protocol detection: what a client speaks, from the first bytes it sends. The inbound
//! listener peeks at them to tell a TLS handshake (the mesh's mTLS) from plaintext HTTP
//! (let in only where a service allows it); it depends on nothing but `std`, so the
//! fuzz target in `proxy/fuzz` compiles this file on its own.

/// The HTTP/2 connection preface a client sends first (RFC 9113, section 3.4).
pub const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The most bytes a decision ever needs: the whole HTTP/2 preface.
pub const MAX_PREFIX: usize = HTTP2_PREFACE.len();

/// HTTP/1 methods, each with the space that ends it.
const HTTP1_METHODS: [&[u8]; 9] = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"CONNECT ",
    b"OPTIONS ",
    b"TRACE ",
    b"PATCH ",
];

/// A TLS record of type handshake (22) opens every TLS connection.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tls,
    Http2,
    Http1,
    /// None of the above: opaque bytes.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detection {
    Known(Protocol),
    /// `prefix` is still the start of more than one answer: read more bytes.
    NeedMore,
}

impl Detection {
    /// The protocol, once the bytes tell it.
    pub fn known(self) -> Option<Protocol> {
        match self {
            Self::Known(protocol) => Some(protocol),
            Self::NeedMore => None,
        }
    }
}

/// Classifies the first bytes of a connection. A `Known` answer never changes when
/// more bytes follow; `NeedMore` comes only for fewer than [`MAX_PREFIX`] bytes.
pub fn detect(prefix: &[u8]) -> Detection {
    let Some(&first) = prefix.first() else {
        return Detection::NeedMore;
    };
    if first == TLS_HANDSHAKE_RECORD {
        return Detection::Known(Protocol::Tls);
    }
    let mut undecided = false;
    for (candidate, protocol) in HTTP1_METHODS
        .iter()
        .map(|method| (*method, Protocol::Http1))
        .chain(std::iter::once((HTTP2_PREFACE, Protocol::Http2)))
    {
        if prefix.starts_with(candidate) {
            return Detection::Known(protocol);
        }
        undecided |= candidate.starts_with(prefix);
    }
    if undecided {
        Detection::NeedMore
    } else {
        Detection::Known(Protocol::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_what_clients_send_first() {
        let cases: [(&[u8], Detection); 10] = [
            (b"", Detection::NeedMore),
            (b"\x16\x03\x01\x02\x00", Detection::Known(Protocol::Tls)),
            (b"GET / HTTP/1.1\r\n", Detection::Known(Protocol::Http1)),
            (b"PATCH /x HTTP/1.1", Detection::Known(Protocol::Http1)),
            (b"GE", Detection::NeedMore),
            (b"P", Detection::NeedMore),
            (b"PRI * HTTP/2.0\r\n", Detection::NeedMore),
            (HTTP2_PREFACE, Detection::Known(Protocol::Http2)),
            (b"GETX / HTTP/1.1", Detection::Known(Protocol::Unknown)),
            (
                b"SSH-2.0-OpenSSH_9.2\r\n",
                Detection::Known(Protocol::Unknown),
            ),
        ];
        for (prefix, expected) in cases {
            assert_eq!(
                detect(prefix),
                expected,
                "{:?}",
                String::from_utf8_lossy(prefix)
            );
        }
    }

    #[test]
    fn a_known_answer_holds_for_every_longer_prefix() {
        let stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04";
        let mut first_known = None;
        for end in 0..=stream.len() {
            match (detect(&stream[..end]), first_known) {
                (Detection::Known(p), None) => first_known = Some(p),
                (Detection::Known(p), Some(q)) => assert_eq!(p, q, "changed at {end}"),
                (Detection::NeedMore, Some(q)) => panic!("forgot {q:?} at {end}"),
                (Detection::NeedMore, None) => assert!(end < MAX_PREFIX),
            }
        }
        assert_eq!(first_known, Some(Protocol::Http2));
    }
}
