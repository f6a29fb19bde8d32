//! Canonical JSON: one byte string per JSON value, so that two requests that mean the same
//! thing fingerprint the same.
//!
//! What does not matter: insignificant whitespace, the order of an object's members, how a
//! string is escaped (`"\u0041"` is `"A"`), and how a non-integer number is written
//! (`1.5`, `15e-1` and `1.50` are the same number).
//!
//! What matters: array order, string contents, and the *type* of a number: an integer
//! (written without fraction or exponent) is never equal to a non-integer, so `1` and
//! `1.0` differ. Numbers are compared exactly, at any size or precision: nothing is
//! rounded through `f64`.
//!
//! Input that is not strict RFC 8259 JSON is refused, as is an object with a duplicate
//! member name (its meaning is ambiguous) and nesting deeper than [`MAX_DEPTH`].
//!
//! The output is itself canonical JSON, so canonicalizing is idempotent.
//!
//! ```
//! use idemdb::canonical_json;
//!
//! let a = canonical_json(br#"{ "b": [1, 2.50], "a": "\u0041" }"#).unwrap();
//! let b = canonical_json(br#"{"a":"A","b":[1,25e-1]}"#).unwrap();
//! assert_eq!(a, b);
//! assert_eq!(a, br#"{"a":"A","b":[1,2.5e0]}"#);
//! assert_ne!(canonical_json(b"1").unwrap(), canonical_json(b"1.0").unwrap());
//! ```

use std::fmt;

/// The deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 128;

/// Why some bytes are not acceptable JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {offset}")]
pub struct JsonError {
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    /// What the problem is.
    pub kind: JsonErrorKind,
}

/// The kinds of [`JsonError`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonErrorKind {
    /// The input ended inside a value.
    UnexpectedEnd,
    /// A byte that cannot appear here.
    UnexpectedByte(u8),
    /// Bytes after the one top-level value.
    TrailingCharacters,
    /// A string that is not valid UTF-8.
    InvalidUtf8,
    /// An unknown escape sequence, or bad hex digits in `\u`.
    InvalidEscape,
    /// A `\u` escape naming half a surrogate pair.
    LoneSurrogate,
    /// A raw control character inside a string.
    ControlCharacter,
    /// A malformed number.
    InvalidNumber,
    /// A number whose exponent is too large to compare.
    NumberOutOfRange,
    /// An object with the same member name twice.
    DuplicateKey(String),
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for JsonErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JsonErrorKind::UnexpectedEnd => f.write_str("unexpected end of input"),
            JsonErrorKind::UnexpectedByte(b) => write!(f, "unexpected byte 0x{b:02x}"),
            JsonErrorKind::TrailingCharacters => f.write_str("trailing characters after the value"),
            JsonErrorKind::InvalidUtf8 => f.write_str("invalid UTF-8 in a string"),
            JsonErrorKind::InvalidEscape => f.write_str("invalid escape sequence"),
            JsonErrorKind::LoneSurrogate => f.write_str("unpaired UTF-16 surrogate in \\u escape"),
            JsonErrorKind::ControlCharacter => {
                f.write_str("unescaped control character in a string")
            }
            JsonErrorKind::InvalidNumber => f.write_str("malformed number"),
            JsonErrorKind::NumberOutOfRange => f.write_str("number exponent out of range"),
            JsonErrorKind::DuplicateKey(k) => write!(f, "duplicate object member {k:?}"),
            JsonErrorKind::TooDeep => write!(f, "nesting deeper than {MAX_DEPTH} levels"),
        }
    }
}

/// Returns the canonical form of a JSON document (see the [module docs](self)).
pub fn canonical_json(input: &[u8]) -> Result<Vec<u8>, JsonError> {
    let mut parser = Parser { input, pos: 0 };
    let mut out = Vec::with_capacity(input.len());
    parser.skip_ws();
    parser.value(&mut out, 0)?;
    parser.skip_ws();
    if parser.pos != input.len() {
        return Err(parser.error(JsonErrorKind::TrailingCharacters));
    }
    Ok(out)
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
}

// Exponents beyond this, as written or once the number is normalised to d.ddd × 10^e, are
// refused rather than compared: they are far outside anything a request legitimately
// carries, and it keeps the arithmetic in i64 without overflow.
const MAX_EXPONENT_MAGNITUDE: i64 = 1_000_000_000_000;

impl<'a> Parser<'a> {
    fn error(&self, kind: JsonErrorKind) -> JsonError {
        JsonError {
            offset: self.pos,
            kind,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, JsonError> {
        let b = self
            .peek()
            .ok_or_else(|| self.error(JsonErrorKind::UnexpectedEnd))?;
        self.pos += 1;
        Ok(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), JsonError> {
        match self.peek() {
            Some(b) if b == want => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(self.error(JsonErrorKind::UnexpectedByte(b))),
            None => Err(self.error(JsonErrorKind::UnexpectedEnd)),
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), JsonError> {
        match self.peek() {
            None => Err(self.error(JsonErrorKind::UnexpectedEnd)),
            Some(b'{') => self.object(out, depth + 1),
            Some(b'[') => self.array(out, depth + 1),
            Some(b'"') => {
                let s = self.string()?;
                write_string(out, &s);
                Ok(())
            }
            Some(b't') => self.literal(out, b"true"),
            Some(b'f') => self.literal(out, b"false"),
            Some(b'n') => self.literal(out, b"null"),
            Some(b'-' | b'0'..=b'9') => self.number(out),
            Some(b) => Err(self.error(JsonErrorKind::UnexpectedByte(b))),
        }
    }

    fn literal(&mut self, out: &mut Vec<u8>, word: &[u8]) -> Result<(), JsonError> {
        for &want in word {
            self.expect(want)?;
        }
        out.extend_from_slice(word);
        Ok(())
    }

    fn object(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error(JsonErrorKind::TooDeep));
        }
        self.expect(b'{')?;
        self.skip_ws();
        let mut members: Vec<(String, Vec<u8>, usize)> = Vec::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                let at = self.pos;
                if self.peek() != Some(b'"') {
                    return Err(match self.peek() {
                        Some(b) => self.error(JsonErrorKind::UnexpectedByte(b)),
                        None => self.error(JsonErrorKind::UnexpectedEnd),
                    });
                }
                let name = self.string()?;
                self.skip_ws();
                self.expect(b':')?;
                self.skip_ws();
                let mut value = Vec::new();
                self.value(&mut value, depth)?;
                members.push((name, value, at));
                self.skip_ws();
                match self.next()? {
                    b',' => continue,
                    b'}' => break,
                    b => {
                        self.pos -= 1;
                        return Err(self.error(JsonErrorKind::UnexpectedByte(b)));
                    }
                }
            }
        }
        members.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        if let Some(w) = members.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(JsonError {
                offset: w[0].2.max(w[1].2),
                kind: JsonErrorKind::DuplicateKey(w[0].0.clone()),
            });
        }
        out.push(b'{');
        for (i, (name, value, _)) in members.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(out, name);
            out.push(b':');
            out.extend_from_slice(value);
        }
        out.push(b'}');
        Ok(())
    }

    fn array(&mut self, out: &mut Vec<u8>, depth: usize) -> Result<(), JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.error(JsonErrorKind::TooDeep));
        }
        self.expect(b'[')?;
        out.push(b'[');
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            out.push(b']');
            return Ok(());
        }
        loop {
            self.skip_ws();
            self.value(out, depth)?;
            self.skip_ws();
            match self.next()? {
                b',' => out.push(b','),
                b']' => {
                    out.push(b']');
                    return Ok(());
                }
                b => {
                    self.pos -= 1;
                    return Err(self.error(JsonErrorKind::UnexpectedByte(b)));
                }
            }
        }
    }

    /// Parses a string literal and returns its decoded contents.
    fn string(&mut self) -> Result<String, JsonError> {
        self.expect(b'"')?;
        let mut buf: Vec<u8> = Vec::new();
        let start = self.pos;
        loop {
            let b = self.next()?;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = self.next()?;
                    match e {
                        b'"' => buf.push(b'"'),
                        b'\\' => buf.push(b'\\'),
                        b'/' => buf.push(b'/'),
                        b'b' => buf.push(0x08),
                        b'f' => buf.push(0x0c),
                        b'n' => buf.push(b'\n'),
                        b'r' => buf.push(b'\r'),
                        b't' => buf.push(b'\t'),
                        b'u' => {
                            let c = self.unicode_escape()?;
                            let mut tmp = [0u8; 4];
                            buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                        }
                        _ => {
                            self.pos -= 1;
                            return Err(self.error(JsonErrorKind::InvalidEscape));
                        }
                    }
                }
                0x00..=0x1f => {
                    self.pos -= 1;
                    return Err(self.error(JsonErrorKind::ControlCharacter));
                }
                _ => buf.push(b),
            }
        }
        String::from_utf8(buf).map_err(|_| JsonError {
            offset: start,
            kind: JsonErrorKind::InvalidUtf8,
        })
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let b = self.next()?;
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => {
                    self.pos -= 1;
                    return Err(self.error(JsonErrorKind::InvalidEscape));
                }
            };
            v = v * 16 + u32::from(d);
        }
        Ok(v)
    }

    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if self.input.get(self.pos..self.pos + 2) != Some(b"\\u") {
                    return Err(self.error(JsonErrorKind::LoneSurrogate));
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error(JsonErrorKind::LoneSurrogate));
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            0xDC00..=0xDFFF => return Err(self.error(JsonErrorKind::LoneSurrogate)),
            c => c,
        };
        char::from_u32(code).ok_or_else(|| self.error(JsonErrorKind::InvalidEscape))
    }

    fn digits(&mut self) -> &'a [u8] {
        let input = self.input;
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        &input[start..self.pos]
    }

    fn number(&mut self, out: &mut Vec<u8>) -> Result<(), JsonError> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_part = self.digits();
        if int_part.is_empty() || (int_part.len() > 1 && int_part[0] == b'0') {
            self.pos = start;
            return Err(self.error(JsonErrorKind::InvalidNumber));
        }
        let mut frac_part: &[u8] = &[];
        let mut is_integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            is_integer = false;
            frac_part = self.digits();
            if frac_part.is_empty() {
                return Err(self.error(JsonErrorKind::InvalidNumber));
            }
        }
        let mut exponent: i64 = 0;
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            is_integer = false;
            let exp_negative = match self.peek() {
                Some(b'-') => {
                    self.pos += 1;
                    true
                }
                Some(b'+') => {
                    self.pos += 1;
                    false
                }
                _ => false,
            };
            let exp_digits = self.digits();
            if exp_digits.is_empty() {
                return Err(self.error(JsonErrorKind::InvalidNumber));
            }
            for &d in exp_digits {
                exponent = exponent * 10 + i64::from(d - b'0');
                if exponent > MAX_EXPONENT_MAGNITUDE {
                    return Err(self.error(JsonErrorKind::NumberOutOfRange));
                }
            }
            if exp_negative {
                exponent = -exponent;
            }
        }

        if is_integer {
            // -0 and 0 are the same integer.
            if negative && int_part != b"0" {
                out.push(b'-');
            }
            out.extend_from_slice(int_part);
            return Ok(());
        }

        // value = digits × 10^(exponent - len(frac)); normalise to d.ddd × 10^e.
        let mut digits: Vec<u8> = int_part.to_vec();
        digits.extend_from_slice(frac_part);
        let mut exp10 = exponent - i64::try_from(frac_part.len()).unwrap_or(i64::MAX);
        let leading = digits.iter().take_while(|d| **d == b'0').count();
        digits.drain(..leading);
        while digits.last() == Some(&b'0') {
            digits.pop();
            exp10 += 1;
        }
        if digits.is_empty() {
            out.extend_from_slice(b"0.0");
            return Ok(());
        }
        let sci_exp = exp10 + i64::try_from(digits.len()).unwrap_or(i64::MAX) - 1;
        // The limit also holds for the normalised exponent, which is what the canonical form
        // writes: `12e1000000000000` is 1.2 × 10^1000000000001, and the canonical form of an
        // accepted number must be accepted again.
        if sci_exp.abs() > MAX_EXPONENT_MAGNITUDE {
            return Err(self.error(JsonErrorKind::NumberOutOfRange));
        }
        if negative {
            out.push(b'-');
        }
        out.push(digits[0]);
        out.push(b'.');
        if digits.len() > 1 {
            out.extend_from_slice(&digits[1..]);
        } else {
            out.push(b'0');
        }
        out.push(b'e');
        out.extend_from_slice(sci_exp.to_string().as_bytes());
        Ok(())
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0x00..=0x1f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        String::from_utf8(canonical_json(s.as_bytes()).expect("valid JSON")).expect("utf-8")
    }

    fn kind(s: &str) -> JsonErrorKind {
        canonical_json(s.as_bytes()).expect_err("invalid JSON").kind
    }

    #[test]
    fn member_order_and_whitespace_do_not_matter() {
        assert_eq!(
            canon(" { \"b\" : 1 ,\n\"a\":[ true,false , null ] } "),
            canon("{\"a\":[true,false,null],\"b\":1}")
        );
        assert_eq!(canon("{\"b\":1,\"a\":2}"), "{\"a\":2,\"b\":1}");
        assert_eq!(canon("{}"), "{}");
        assert_eq!(canon("[ ]"), "[]");
    }

    #[test]
    fn array_order_matters() {
        assert_ne!(canon("[1,2]"), canon("[2,1]"));
    }

    #[test]
    fn number_types_matter_and_values_are_exact() {
        assert_ne!(canon("1"), canon("1.0"));
        assert_eq!(canon("1.0"), canon("1.00"));
        assert_eq!(canon("1.0"), canon("10e-1"));
        assert_eq!(canon("1.5"), "1.5e0");
        assert_eq!(canon("100.0"), "1.0e2");
        assert_eq!(canon("0.001"), "1.0e-3");
        assert_eq!(canon("-0"), "0");
        assert_eq!(canon("-0.0"), "0.0");
        assert_eq!(canon("0e5"), "0.0");
        assert_eq!(canon("-12"), "-12");
        assert_eq!(canon("1E+2"), "1.0e2");
        // beyond f64 precision, still distinct
        assert_ne!(
            canon("123456789012345678901234567890"),
            canon("123456789012345678901234567891")
        );
        assert_ne!(canon("0.10000000000000000001"), canon("0.1"));
    }

    #[test]
    fn strings_compare_by_content() {
        assert_eq!(canon("\"\\u0041\""), "\"A\"");
        assert_eq!(canon("\"\\/\""), "\"/\"");
        assert_eq!(canon("\"\\ud83d\\ude00\""), "\"\u{1F600}\"");
        assert_eq!(canon("\"a\\u0001\""), "\"a\\u0001\"");
        assert_ne!(canon("\"a\""), canon("\"A\""));
    }

    #[test]
    fn canonical_output_is_a_fixed_point() {
        for s in [
            "{\"z\":[1,2.5,-3e10,\"x\\n\\u0002\",{\"b\":null,\"a\":{}}],\"a\":0.0}",
            "-0.000123e-7",
            "\"\\u00e9\\t\"",
        ] {
            let once = canon(s);
            assert_eq!(canon(&once), once);
        }
    }

    #[test]
    fn exponent_limit_applies_to_the_normalised_exponent() {
        // Found by the canonical_json fuzz target: these were accepted, but their canonical
        // forms (1.2e1000000000001, 1.0e-1000000000002) were refused.
        assert_eq!(kind("12e1000000000000"), JsonErrorKind::NumberOutOfRange);
        assert_eq!(kind("0.01e-1000000000000"), JsonErrorKind::NumberOutOfRange);
        // at the limit, written either way, still accepted, and a fixed point
        for s in [
            "1e1000000000000",
            "10e999999999999",
            "1e-1000000000000",
            "-0.010e-999999999998",
        ] {
            let once = canon(s);
            assert_eq!(canon(&once), once);
        }
        assert_eq!(canon("10e999999999999"), "1.0e1000000000000");
        assert_eq!(canon("-0.010e-999999999998"), "-1.0e-1000000000000");
        // zero has no exponent to speak of
        assert_eq!(canon("0.0e1000000000000"), "0.0");
    }

    #[test]
    fn invalid_input_is_refused_with_a_reason() {
        assert_eq!(kind(""), JsonErrorKind::UnexpectedEnd);
        assert_eq!(kind("{\"a\":1,}"), JsonErrorKind::UnexpectedByte(b'}'));
        assert_eq!(kind("[1,]"), JsonErrorKind::UnexpectedByte(b']'));
        assert_eq!(kind("01"), JsonErrorKind::InvalidNumber);
        assert_eq!(kind("1."), JsonErrorKind::InvalidNumber);
        assert_eq!(kind("1e"), JsonErrorKind::InvalidNumber);
        assert_eq!(kind("-"), JsonErrorKind::InvalidNumber);
        assert_eq!(kind("1e9999999999999"), JsonErrorKind::NumberOutOfRange);
        assert_eq!(kind("\"\\x\""), JsonErrorKind::InvalidEscape);
        assert_eq!(kind("\"\\ud800\""), JsonErrorKind::LoneSurrogate);
        assert_eq!(kind("\"\\udc00\""), JsonErrorKind::LoneSurrogate);
        assert_eq!(kind("\"a\nb\""), JsonErrorKind::ControlCharacter);
        assert_eq!(
            canonical_json(b"\"\xff\"").expect_err("bad utf-8").kind,
            JsonErrorKind::InvalidUtf8
        );
        assert_eq!(
            kind("{\"a\":1,\"a\":2}"),
            JsonErrorKind::DuplicateKey("a".into())
        );
        assert_eq!(
            kind("{\"a\":1,\"\\u0061\":2}"),
            JsonErrorKind::DuplicateKey("a".into())
        );
        assert_eq!(kind("1 2"), JsonErrorKind::TrailingCharacters);
        assert_eq!(kind("tru"), JsonErrorKind::UnexpectedEnd);
        assert_eq!(kind("nul1"), JsonErrorKind::UnexpectedByte(b'1'));
        assert_eq!(kind(&"[".repeat(MAX_DEPTH + 1)), JsonErrorKind::TooDeep);
        assert!(
            canonical_json(
                format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH)).as_bytes()
            )
            .is_ok()
        );
    }
}
