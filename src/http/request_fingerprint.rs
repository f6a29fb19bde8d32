//! What makes two HTTP requests "the same request": method, path, query, body (canonical
//! when it is JSON) and the headers the layer is told to compare.

use ::http::header::{self, HeaderMap, HeaderName};
use ::http::request;

use crate::fingerprint::Fingerprint;

/// Whether a `Content-Type` names JSON: `application/json` or any `+json` type.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// The fingerprint of a request. A JSON body is compared in canonical form (member order
/// and whitespace do not matter); a body declared as JSON that does not parse is compared
/// byte for byte, as any other body. A listed header that is absent differs from one that
/// is present and empty.
pub(crate) fn fingerprint(
    parts: &request::Parts,
    body: &[u8],
    headers: &[HeaderName],
) -> Fingerprint {
    let mut builder = Fingerprint::builder()
        .method(parts.method.as_str())
        .path(parts.uri.path());
    builder = match parts.uri.query() {
        Some(query) => builder.field("query", query),
        None => builder.field("query-absent", ""),
    };
    for name in headers {
        let mut values = parts.headers.get_all(name).iter().peekable();
        if values.peek().is_none() {
            builder = builder.field(&format!("header-absent:{name}"), "");
        }
        for value in values {
            builder = builder.field(&format!("header:{name}"), value.as_bytes());
        }
    }
    if is_json(&parts.headers) {
        match builder.clone().json_body(body) {
            Ok(with_json) => return with_json.finish(),
            Err(_) => return builder.body(body).finish(),
        }
    }
    builder.body(body).finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
        let mut builder = ::http::Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("request").into_parts().0
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    #[test]
    fn json_bodies_compare_canonically() {
        let parts = request("POST", "/n", &[JSON]);
        let a = fingerprint(&parts, br#"{"a": 1, "b": 2}"#, &[]);
        let b = fingerprint(&parts, br#"{"b":2,"a":1}"#, &[]);
        assert_eq!(a, b);
        let c = fingerprint(&parts, br#"{"b":2,"a":2}"#, &[]);
        assert_ne!(a, c);
        // Without a JSON content type the bytes are compared.
        let raw = request("POST", "/n", &[]);
        assert_ne!(
            fingerprint(&raw, br#"{"a": 1, "b": 2}"#, &[]),
            fingerprint(&raw, br#"{"b":2,"a":1}"#, &[])
        );
        // Invalid JSON still fingerprints, byte for byte.
        assert_ne!(
            fingerprint(&parts, b"{", &[]),
            fingerprint(&parts, b"{ ", &[])
        );
    }

    #[test]
    fn method_path_query_and_listed_headers_count() {
        let base = fingerprint(&request("POST", "/n?x=1", &[]), b"", &[]);
        assert_ne!(
            base,
            fingerprint(&request("PATCH", "/n?x=1", &[]), b"", &[])
        );
        assert_ne!(base, fingerprint(&request("POST", "/m?x=1", &[]), b"", &[]));
        assert_ne!(base, fingerprint(&request("POST", "/n?x=2", &[]), b"", &[]));
        assert_ne!(
            fingerprint(&request("POST", "/n?", &[]), b"", &[]),
            fingerprint(&request("POST", "/n", &[]), b"", &[])
        );
        // Unlisted headers do not count; listed ones do, and absent differs from empty.
        let h = [HeaderName::from_static("x-account")];
        let with = |v: &str| fingerprint(&request("POST", "/n", &[("x-account", v)]), b"", &h);
        assert_eq!(
            fingerprint(&request("POST", "/n", &[("x-other", "1")]), b"", &[]),
            fingerprint(&request("POST", "/n", &[]), b"", &[])
        );
        assert_ne!(with("a"), with("b"));
        assert_ne!(with(""), fingerprint(&request("POST", "/n", &[]), b"", &h));
    }

    #[test]
    fn json_content_types() {
        let is = |ct: &str| is_json(&request("POST", "/", &[("content-type", ct)]).headers);
        assert!(is("application/json"));
        assert!(is("Application/JSON; charset=utf-8"));
        assert!(is("application/merge-patch+json"));
        assert!(!is("text/plain"));
        assert!(!is("application/jsonx"));
    }
}
