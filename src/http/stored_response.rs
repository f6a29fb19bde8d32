//! The HTTP response as idemdb stores it: status, headers and body in a small versioned
//! binary format of our own, inside the record's response bytes.
//!
//! ```text
//! "IDH" format(u8 = 1) status(u16 BE) header-count(u32 BE)
//!   per header: name-length(u16 BE) name value-length(u32 BE) value
//! body: every remaining byte
//! ```
//!
//! A new layout gets a new format byte; decoding checks every length, so a record that is
//! not ours (or is damaged) is an error, never a panic.

use ::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ::http::{StatusCode, response};

const MAGIC: &[u8; 3] = b"IDH";
const FORMAT: u8 = 1;

/// A response as stored: status, end-to-end headers, and the whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredResponse {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// Headers that describe one connection, not the response (RFC 9110 §7.6.1), and so are
/// never stored or replayed.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// The end-to-end headers of a response: without hop-by-hop headers, without the headers
/// `Connection` names, without `Transfer-Encoding` (a replay sends the body whole), and
/// without the `skip` headers (the layer's own markers).
pub(crate) fn end_to_end_headers(parts: &response::Parts, skip: &[&HeaderName]) -> HeaderMap {
    let named_by_connection: Vec<String> = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    let mut kept = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        let lower = name.as_str();
        let drop = HOP_BY_HOP.contains(&lower)
            || name == header::TRANSFER_ENCODING
            || named_by_connection.iter().any(|n| n == lower)
            || skip.contains(&name);
        if !drop {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

impl StoredResponse {
    /// The stored bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::encoded_len(&self.headers, self.body.len()));
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(&self.status.as_u16().to_be_bytes());
        out.extend_from_slice(&(self.headers.len() as u32).to_be_bytes());
        for (name, value) in &self.headers {
            // Header names are at most 64 KiB in practice; http caps them far below that.
            let name = name.as_str().as_bytes();
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name);
            out.extend_from_slice(&(value.len() as u32).to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// How long [`encode`](Self::encode)'s output is, without building it.
    pub(crate) fn encoded_len(headers: &HeaderMap, body_len: usize) -> usize {
        let header_bytes: usize = headers
            .iter()
            .map(|(n, v)| 6 + n.as_str().len() + v.len())
            .sum();
        10 + header_bytes + body_len
    }

    /// Reads stored bytes back; the error says what is wrong with them.
    pub(crate) fn decode(bytes: &[u8]) -> Result<StoredResponse, String> {
        let mut r = Reader { bytes, at: 0 };
        if r.take(3)? != MAGIC {
            return Err("not an HTTP response stored by idemdb's layer".to_owned());
        }
        let format = r.take(1)?[0];
        if format != FORMAT {
            return Err(format!(
                "stored in HTTP response format {format}; this build reads format {FORMAT}"
            ));
        }
        let status = u16::from_be_bytes(r.array()?);
        let status = StatusCode::from_u16(status)
            .map_err(|_| format!("invalid stored status code {status}"))?;
        let count = u32::from_be_bytes(r.array()?);
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let name_len = usize::from(u16::from_be_bytes(r.array()?));
            let name = HeaderName::from_bytes(r.take(name_len)?)
                .map_err(|_| "invalid stored header name".to_owned())?;
            let value_len = u32::from_be_bytes(r.array()?) as usize;
            let value = HeaderValue::from_bytes(r.take(value_len)?)
                .map_err(|_| format!("invalid stored value of header {name}"))?;
            headers.append(name, value);
        }
        Ok(StoredResponse {
            status,
            headers,
            body: bytes[r.at..].to_vec(),
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("stored response truncated at byte {}", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoredResponse {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("one"));
        headers.append("x-multi", HeaderValue::from_static("two"));
        StoredResponse {
            status: StatusCode::CREATED,
            headers,
            body: b"hello".to_vec(),
        }
    }

    #[test]
    fn round_trip_keeps_repeated_headers_in_order() {
        let stored = sample();
        let bytes = stored.encode();
        assert_eq!(bytes.len(), StoredResponse::encoded_len(&stored.headers, 5));
        let back = StoredResponse::decode(&bytes).expect("decode");
        assert_eq!(back, stored);
        let multi: Vec<_> = back.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
    }

    #[test]
    fn every_truncation_is_an_error_or_a_shorter_body() {
        let bytes = sample().encode();
        let body_start = bytes.len() - 5;
        for len in 0..bytes.len() {
            let result = StoredResponse::decode(&bytes[..len]);
            if len < body_start {
                assert!(result.is_err(), "truncated to {len} bytes decoded");
            } else {
                assert_eq!(result.expect("body cut").body.len(), len - body_start);
            }
        }
    }

    #[test]
    fn foreign_bytes_and_newer_formats_are_refused() {
        assert!(StoredResponse::decode(b"{\"id\": 1}").is_err());
        let mut bytes = sample().encode();
        bytes[3] = 2;
        let err = StoredResponse::decode(&bytes).expect_err("newer format");
        assert!(err.contains("format 2"), "{err}");
    }

    #[test]
    fn hop_by_hop_headers_are_not_kept() {
        let response = ::http::Response::builder()
            .header("connection", "keep-alive, x-conn-scoped")
            .header("keep-alive", "timeout=5")
            .header("transfer-encoding", "chunked")
            .header("x-conn-scoped", "1")
            .header("x-marker", "1")
            .header("content-type", "application/json")
            .body(())
            .expect("response");
        let (parts, ()) = response.into_parts();
        let marker = HeaderName::from_static("x-marker");
        let kept = end_to_end_headers(&parts, &[&marker]);
        let names: Vec<_> = kept.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type"]);
    }
}
