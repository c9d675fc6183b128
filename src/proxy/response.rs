//! A worker's response on the lean path: its head parsed with `httparse`, how its
//! body is framed, the head as it goes to the client, and a scanner that finds the
//! end of a chunked body that is passed through as it is.

use bytes::{BufMut, BytesMut};

/// Most headers a worker's response may have.
const MAX_HEADERS: usize = 96;

/// How a response's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the worker closes the connection.
    Close,
}

/// A parsed response head.
#[derive(Debug)]
pub(crate) struct Response {
    /// Length of the head in the buffer it was read into.
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// The worker keeps the connection open after this response.
    pub(crate) keep_alive: bool,
    /// The head for the client (`HTTP/1.1`, hop-by-hop headers removed), without
    /// its final blank line and without `Connection`.
    pub(crate) client_head: BytesMut,
}

fn eq(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

impl Response {
    /// Parse the head at the start of `buf` for a request that was `HEAD` or not.
    /// `Ok(None)` while incomplete; `Err` for a head no client should get.
    pub(crate) fn parse(buf: &[u8], head_request: bool) -> Result<Option<Response>, ()> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(()),
        };
        let status = resp.code.ok_or(())?;
        let http11 = resp.version == Some(1);
        let mut keep_alive = http11;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut nominated: Vec<&[u8]> = Vec::new();
        for h in resp.headers.iter() {
            let (name, value) = (h.name.as_bytes(), h.value);
            if eq(name, "content-length") {
                let n = std::str::from_utf8(value)
                    .ok()
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or(())?;
                if length.is_some_and(|l| l != n) {
                    return Err(());
                }
                length = Some(n);
            } else if eq(name, "transfer-encoding") {
                // Only plain `chunked` is passed through; anything else is not ours.
                if !eq(value.trim_ascii(), "chunked") {
                    return Err(());
                }
                chunked = true;
            } else if eq(name, "connection") {
                for token in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if eq(token, "close") {
                        keep_alive = false;
                    } else if eq(token, "keep-alive") {
                        keep_alive = true;
                    } else if !token.is_empty() {
                        nominated.push(token);
                    }
                }
            }
        }
        let framing = if head_request || status == 204 || status == 304 || status < 200 {
            Framing::Empty
        } else if chunked {
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            keep_alive = false;
            Framing::Close
        };
        let mut client_head = BytesMut::with_capacity(len + 32);
        client_head.put_slice(b"HTTP/1.1 ");
        client_head.put_slice(itoa::Buffer::new().format(status).as_bytes());
        client_head.put_u8(b' ');
        client_head.put_slice(resp.reason.unwrap_or("").as_bytes());
        client_head.put_slice(b"\r\n");
        for h in resp.headers.iter() {
            let name = h.name.as_bytes();
            let hop = [
                "connection",
                "keep-alive",
                "proxy-connection",
                "te",
                "trailer",
                "upgrade",
            ]
            .iter()
            .any(|d| eq(name, d))
                || nominated
                    .iter()
                    .any(|n| eq(name, std::str::from_utf8(n).unwrap_or("")));
            if hop {
                continue;
            }
            client_head.put_slice(name);
            client_head.put_slice(b": ");
            client_head.put_slice(h.value);
            client_head.put_slice(b"\r\n");
        }
        Ok(Some(Response {
            len,
            status,
            framing,
            keep_alive,
            client_head,
        }))
    }
}

/// Finds where a chunked body ends, fed the bytes as they pass.
#[derive(Debug, Default)]
pub(crate) struct ChunkScanner {
    state: Chunk,
    size: u64,
    /// Bytes of the current line (size line or trailer line), for the blank one.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Hex digits of a chunk size.
    #[default]
    Size,
    /// A chunk extension, to the end of the size line.
    Extension,
    /// The LF of the size line.
    SizeLf,
    /// Chunk data.
    Data,
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// Trailer lines after the last chunk, until a blank one.
    Trailer,
    /// The LF of a trailer line.
    TrailerLf,
    Done,
}

impl ChunkScanner {
    /// Feed the next bytes; `Ok(Some(n))` when the body ends after `n` of them,
    /// `Err` on a malformed body.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<Option<usize>, ()> {
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match self.state {
                Chunk::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = (b as char).to_digit(16).ok_or(())? as u64;
                        self.size = self.size.checked_mul(16).ok_or(())? + d;
                        self.line += 1;
                    }
                    b';' | b' ' | b'\t' if self.line > 0 => self.state = Chunk::Extension,
                    b'\r' if self.line > 0 => self.state = Chunk::SizeLf,
                    _ => return Err(()),
                },
                Chunk::Extension => {
                    if b == b'\r' {
                        self.state = Chunk::SizeLf;
                    }
                }
                Chunk::SizeLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.line = 0;
                    self.state = if self.size == 0 {
                        Chunk::Trailer
                    } else {
                        Chunk::Data
                    };
                }
                Chunk::Data => {
                    let take = (self.size as usize).min(data.len() - i);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = Chunk::DataCr;
                    }
                    continue;
                }
                Chunk::DataCr => {
                    if b != b'\r' {
                        return Err(());
                    }
                    self.state = Chunk::DataLf;
                }
                Chunk::DataLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    self.state = Chunk::Size;
                }
                Chunk::Trailer => {
                    if b == b'\r' {
                        self.state = Chunk::TrailerLf;
                    } else {
                        self.line += 1;
                    }
                }
                Chunk::TrailerLf => {
                    if b != b'\n' {
                        return Err(());
                    }
                    if self.line == 0 {
                        self.state = Chunk::Done;
                        return Ok(Some(i + 1));
                    }
                    self.line = 0;
                    self.state = Chunk::Trailer;
                }
                Chunk::Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_and_hop_by_hop_headers() {
        let r = Response::parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive, x-secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nX-App: a\r\n\r\nhello",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.status, r.framing, r.keep_alive),
            (200, Framing::Length(5), true)
        );
        assert_eq!(
            String::from_utf8(r.client_head.to_vec()).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-App: a\r\n"
        );
        let r = Response::parse(b"HTTP/1.0 200 OK\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((r.framing, r.keep_alive), (Framing::Close, false));
        let r = Response::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(r.framing, Framing::Empty);
        let r = Response::parse(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.framing, Framing::Chunked);
        assert!(Response::parse(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            false
        )
        .is_err());
        assert!(
            Response::parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).is_err()
        );
        assert!(Response::parse(b"HTTP/1.1 200 OK\r\nContent-Len", false)
            .unwrap()
            .is_none());
    }

    #[test]
    fn the_end_of_a_chunked_body_is_found_across_reads() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for split in 0..body.len() {
            let mut s = ChunkScanner::default();
            let first = s.feed(&body[..split]).unwrap();
            let end = match first {
                Some(n) => n,
                None => split + s.feed(&body[split..]).unwrap().unwrap(),
            };
            assert_eq!(&body[end..], b"NEXT", "split at {split}");
        }
        let mut s = ChunkScanner::default();
        assert_eq!(s.feed(b"0\r\n\r\n").unwrap(), Some(5));
        assert!(ChunkScanner::default().feed(b"x\r\n").is_err());
        assert!(ChunkScanner::default().feed(b"2\r\nabX").is_err());
    }
}
