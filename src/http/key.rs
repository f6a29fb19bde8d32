//! Finding the idempotency key: the `Idempotency-Key` header (a structured-field string,
//! quoted or not) or a field of a JSON body.

use ::http::HeaderMap;
use ::http::header::HeaderName;

/// Why a request's key could not be read. Each becomes a 400 with the message as detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyProblem {
    /// Not a usable header value or body field; the text says why.
    Malformed(String),
    /// Two places name different keys.
    Mismatch(String),
    /// The body should carry the key in a JSON field but is not JSON.
    BodyMalformed(String),
}

/// Why the layer refuses a key with a comma, whatever the store's key policy: a proxy
/// joins repeated header fields with commas (RFC 9110, section 5.3), so a key `k1, k2`
/// cannot be told from two `Idempotency-Key` headers merged on the way.
pub(crate) const COMMA: &str = "it contains a comma, which a key sent over HTTP must not \
     (proxies join two Idempotency-Key headers into one with a comma, so such a value may \
     be two keys)";

/// Checks the one rule the layer adds to every key policy: no comma.
pub(crate) fn check_no_comma(key: &str) -> Result<(), &'static str> {
    if key.contains(',') {
        return Err(COMMA);
    }
    Ok(())
}

/// The key in the header, if present: `Ok(None)` when there is no such header.
pub(crate) fn from_header(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Option<String>, KeyProblem> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(KeyProblem::Malformed(format!(
            "the request has more than one {name} header"
        )));
    }
    let text = value.to_str().map_err(|_| {
        KeyProblem::Malformed(format!(
            "the {name} header is not visible ASCII text (a structured-field string)"
        ))
    })?;
    parse_header_value(text)
        .map(Some)
        .map_err(|reason| KeyProblem::Malformed(format!("the {name} header {reason}")))
}

/// Parses a header value: an RFC 8941 sf-string (`"..."`, with `\"` and `\\` escapes and
/// optional `;parameters`, which are ignored), or, as many clients send it, the bare key.
fn parse_header_value(raw: &str) -> Result<String, &'static str> {
    let text = raw.trim_matches(|c| c == ' ' || c == '\t');
    let Some(quoted) = text.strip_prefix('"') else {
        if text.contains('"') {
            return Err("has a stray double quote (quote the whole key, or none of it)");
        }
        return Ok(text.to_owned());
    };
    let mut key = String::with_capacity(quoted.len());
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, escaped @ ('"' | '\\'))) => key.push(escaped),
                _ => return Err("has an invalid escape (only \\\" and \\\\ are allowed)"),
            },
            '"' => {
                let rest = quoted[i + 1..].trim_start_matches([' ', '\t']);
                if rest.is_empty() || rest.starts_with(';') {
                    return Ok(key);
                }
                return Err("has characters after the closing quote");
            }
            ' '..='~' => key.push(c),
            _ => return Err("contains a character a structured-field string cannot hold"),
        }
    }
    Err("opens a quoted string but never closes it")
}

/// The key in a JSON body's top-level `fields` (checked in order): `Ok(None)` when there
/// are no fields to look at, the body is empty, or it is JSON but not an object or holds
/// none of them (or only `null`s). A non-empty body that is not JSON is
/// [`KeyProblem::BodyMalformed`] (the caller decides whether that matters). Two fields
/// naming different keys are a mismatch; a field that is not a string is malformed.
pub(crate) fn from_json_body(
    body: &[u8],
    fields: &[String],
) -> Result<Option<(String, String)>, KeyProblem> {
    if fields.is_empty() || body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value = serde_json::from_slice::<serde_json::Value>(body).map_err(|e| {
        KeyProblem::BodyMalformed(format!(
            "the request body is not valid JSON ({e}), so its idempotency key field ({}) \
             cannot be read",
            fields
                .iter()
                .map(|f| format!("{f:?}"))
                .collect::<Vec<_>>()
                .join(" or ")
        ))
    })?;
    let serde_json::Value::Object(object) = value else {
        return Ok(None);
    };
    let mut found: Option<(String, String)> = None;
    for field in fields {
        let key = match object.get(field) {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(key)) => key,
            Some(_) => {
                return Err(KeyProblem::Malformed(format!(
                    "the body field {field:?} must be a string"
                )));
            }
        };
        match &found {
            None => found = Some((field.clone(), key.clone())),
            Some((first, earlier)) if earlier != key => {
                return Err(KeyProblem::Mismatch(format!(
                    "the body fields {first:?} and {field:?} name different idempotency keys"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_quoted_header_values() {
        assert_eq!(parse_header_value("abc-123"), Ok("abc-123".into()));
        assert_eq!(parse_header_value("  abc  "), Ok("abc".into()));
        assert_eq!(parse_header_value("\"abc-123\""), Ok("abc-123".into()));
        assert_eq!(parse_header_value(r#""a\"b\\c""#), Ok(r#"a"b\c"#.into()));
        assert_eq!(parse_header_value("\"abc\";p=1"), Ok("abc".into()));
        assert_eq!(parse_header_value("\"\""), Ok(String::new()));
    }

    #[test]
    fn broken_header_values() {
        assert!(parse_header_value("\"abc").is_err());
        assert!(parse_header_value("\"abc\"x").is_err());
        assert!(parse_header_value(r#""a\nb""#).is_err());
        assert!(parse_header_value("ab\"c").is_err());
    }

    #[test]
    fn commas_are_refused() {
        assert_eq!(check_no_comma("k1"), Ok(()));
        assert_eq!(check_no_comma("k1, k2"), Err(COMMA));
        assert_eq!(check_no_comma("k1,k2"), Err(COMMA));
        // what a proxy makes of two bare headers parses as one bare value: the comma check
        // is what refuses it
        assert_eq!(parse_header_value("k1, k2"), Ok("k1, k2".into()));
    }

    #[test]
    fn header_lookup() {
        let name = HeaderName::from_static("idempotency-key");
        let mut headers = HeaderMap::new();
        assert_eq!(from_header(&headers, &name), Ok(None));
        headers.insert(&name, "\"k1\"".parse().expect("value"));
        assert_eq!(from_header(&headers, &name), Ok(Some("k1".into())));
        headers.append(&name, "k2".parse().expect("value"));
        assert!(matches!(
            from_header(&headers, &name),
            Err(KeyProblem::Malformed(m)) if m.contains("more than one")
        ));
    }

    #[test]
    fn json_body_fields() {
        let fields = vec!["idempotency_key".to_owned(), "external_id".to_owned()];
        let found = |body: &str| from_json_body(body.as_bytes(), &fields);
        assert_eq!(
            found(r#"{"idempotency_key": "a"}"#),
            Ok(Some(("idempotency_key".into(), "a".into())))
        );
        assert_eq!(
            found(r#"{"external_id": "b", "x": 1}"#),
            Ok(Some(("external_id".into(), "b".into())))
        );
        assert_eq!(
            found(r#"{"idempotency_key": "a", "external_id": "a"}"#),
            Ok(Some(("idempotency_key".into(), "a".into())))
        );
        assert!(matches!(
            found(r#"{"idempotency_key": "a", "external_id": "b"}"#),
            Err(KeyProblem::Mismatch(_))
        ));
        assert!(matches!(
            found(r#"{"idempotency_key": 7}"#),
            Err(KeyProblem::Malformed(_))
        ));
        assert_eq!(found(r#"{"idempotency_key": null}"#), Ok(None));
        assert_eq!(found(r#"[1, 2]"#), Ok(None));
        assert_eq!(found(""), Ok(None));
        assert_eq!(found(" \n"), Ok(None));
        assert!(matches!(
            found("not json"),
            Err(KeyProblem::BodyMalformed(m)) if m.contains("not valid JSON")
        ));
        assert!(matches!(
            found(r#"{"idempotency_key": "a""#),
            Err(KeyProblem::BodyMalformed(_))
        ));
        assert_eq!(from_json_body(br#"{"idempotency_key":"a"}"#, &[]), Ok(None));
    }
}
