//! The protocol of the opaque TCP scenario, the bench's own: on a persistent connection the
//! client writes a fixed 64-byte request and the upstream answers a fixed 1 KiB response
//! (the size of the HTTP scenarios' body); one round trip is one request. A request's
//! first eight bytes are its sequence number and the response starts with the same
//! eight, so the client knows every answer is its own request's and that no byte was
//! lost or added on the way; nothing else is parsed, which keeps the upstream's side as
//! cheap as its HTTP one.

use std::io::{self, Read, Write};
use std::ops::Range;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The bytes a client sends for one request.
pub const REQUEST_SIZE: usize = 64;
/// The bytes the upstream answers to each.
pub const RESPONSE_SIZE: usize = crate::upstream::BODY_SIZE;
/// Where the sequence number sits, in requests and responses alike (little-endian).
const SEQUENCE: Range<usize> = 0..8;

/// The request numbered `sequence`.
pub fn request(sequence: u64) -> [u8; REQUEST_SIZE] {
    let mut request = [b'q'; REQUEST_SIZE];
    request[SEQUENCE].copy_from_slice(&sequence.to_le_bytes());
    request
}

/// Whether `response` answers the request numbered `sequence`.
fn check_response(response: &[u8; RESPONSE_SIZE], sequence: u64) -> io::Result<()> {
    let mut answered = [0; 8];
    answered.copy_from_slice(&response[SEQUENCE]);
    let answered = u64::from_le_bytes(answered);
    if answered == sequence {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "an answer carried another request's number",
        ))
    }
}

/// The upstream's side of one connection: answers each request until the client closes.
pub async fn serve<S>(mut stream: S) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut request = [0; REQUEST_SIZE];
    let mut response = [b'x'; RESPONSE_SIZE];
    loop {
        match stream.read_exact(&mut request).await {
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(err) => return Err(err),
        }
        response[SEQUENCE].copy_from_slice(&request[SEQUENCE]);
        stream.write_all(&response).await?;
    }
}

/// One request and its answer on an async stream.
pub async fn round_trip<S>(stream: &mut S, sequence: u64) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&request(sequence)).await?;
    let mut response = [0; RESPONSE_SIZE];
    stream.read_exact(&mut response).await?;
    check_response(&response, sequence)
}

/// One request and its answer on a blocking stream.
pub fn round_trip_blocking<S>(stream: &mut S, sequence: u64) -> io::Result<()>
where
    S: Read + Write,
{
    stream.write_all(&request(sequence))?;
    let mut response = [0; RESPONSE_SIZE];
    stream.read_exact(&mut response)?;
    check_response(&response, sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_request_gets_its_own_answer_until_the_client_closes() {
        let (mut client, upstream) = tokio::io::duplex(4096);
        let serving = tokio::spawn(serve(upstream));
        for sequence in [0, 1, u64::MAX] {
            round_trip(&mut client, sequence).await.unwrap();
        }
        drop(client);
        serving.await.unwrap().unwrap();
    }

    #[test]
    fn an_answer_to_another_request_is_refused() {
        let mut response = [b'x'; RESPONSE_SIZE];
        response[SEQUENCE].copy_from_slice(&7u64.to_le_bytes());
        assert!(check_response(&response, 7).is_ok());
        let err = check_response(&response, 8).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_request_is_its_number_then_filler() {
        let request = request(0x0102);
        assert_eq!(&request[..3], [0x02, 0x01, 0x00]);
        assert!(request[SEQUENCE.end..].iter().all(|byte| *byte == b'q'));
    }
}
