//! The `canonical_json` target: canonical JSON and JSON fingerprints on arbitrary bytes.

use crate::canonical_json::{JsonErrorKind, MAX_DEPTH, canonical_json};
use crate::fingerprint::Fingerprint;

/// Canonical JSON and JSON fingerprints on arbitrary bytes.
///
/// Never panics. For accepted input: the canonical form is strict JSON and canonicalizing
/// it gives the same bytes; the input is strict RFC 8259 JSON (checked by an independent
/// parser here);
/// re-emitting it with every object's members reversed, or rotated and with whitespace
/// between all tokens, gives the same canonical form and the same fingerprint. Input the
/// independent parser accepts is refused only for a reason the module documents (a
/// duplicate member, an exponent out of range, a lone surrogate), and every error's offset
/// lies within the input.
pub fn canonical_json_check(data: &[u8]) {
    let strict = StrictParser::parse(data);
    let canonical = match canonical_json(data) {
        Ok(c) => c,
        Err(e) => {
            assert!(
                e.offset <= data.len(),
                "error offset {} past the end of {} bytes",
                e.offset,
                data.len()
            );
            if strict.is_ok() {
                assert!(
                    matches!(
                        e.kind,
                        JsonErrorKind::DuplicateKey(_)
                            | JsonErrorKind::NumberOutOfRange
                            | JsonErrorKind::LoneSurrogate
                    ),
                    "valid JSON refused: {e}"
                );
            }
            assert!(
                Fingerprint::builder().json_body(data).is_err(),
                "a JSON field accepted what canonical_json refused"
            );
            return;
        }
    };
    let tree = match strict {
        Ok(tree) => tree,
        Err(StrictError::Syntax(at)) => {
            panic!("canonical_json accepted non-JSON (a syntax error at byte {at})")
        }
        Err(StrictError::TooDeep) => {
            panic!("canonical_json accepted nesting deeper than {MAX_DEPTH}")
        }
    };

    let again =
        canonical_json(&canonical).unwrap_or_else(|e| panic!("the canonical form is refused: {e}"));
    assert!(again == canonical, "canonicalizing is not idempotent");
    assert!(
        StrictParser::parse(&canonical).is_ok(),
        "the canonical form is not strict JSON"
    );

    let fingerprint = |json: &[u8]| {
        Fingerprint::builder()
            .json_body(json)
            .unwrap_or_else(|e| panic!("{e}"))
            .finish()
    };
    let expected = fingerprint(data);
    assert_eq!(
        fingerprint(&canonical),
        expected,
        "fingerprint of the canonical form"
    );

    let mut reversed = Vec::new();
    emit(&tree, Order::Reversed, &mut Gaps::none(), &mut reversed);
    assert!(
        canonical_json(&reversed).as_deref() == Ok(&canonical[..]),
        "reversing object members changed the canonical form"
    );
    assert_eq!(fingerprint(&reversed), expected, "reversed members");

    let mut spaced = Vec::new();
    let mut gaps = Gaps::from(data);
    gaps.put(&mut spaced);
    emit(&tree, Order::Rotated, &mut gaps, &mut spaced);
    gaps.put(&mut spaced);
    assert!(
        canonical_json(&spaced).as_deref() == Ok(&canonical[..]),
        "whitespace or member rotation changed the canonical form"
    );
    assert_eq!(
        fingerprint(&spaced),
        expected,
        "whitespace and rotated members"
    );
}

/// A JSON value as the strict parser saw it: scalars as their exact source bytes.
#[derive(Debug)]
enum Node<'a> {
    Scalar(&'a [u8]),
    Array(Vec<Node<'a>>),
    Object(Vec<(&'a [u8], Node<'a>)>),
}

#[derive(Debug)]
enum StrictError {
    Syntax(usize),
    TooDeep,
}

/// An RFC 8259 parser written independently of `canonical_json`, keeping source bytes.
struct StrictParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> StrictParser<'a> {
    fn parse(s: &'a [u8]) -> Result<Node<'a>, StrictError> {
        let mut p = StrictParser { s, pos: 0 };
        p.ws();
        let node = p.value(0)?;
        p.ws();
        if p.pos != s.len() {
            return Err(StrictError::Syntax(p.pos));
        }
        Ok(node)
    }

    fn fail<T>(&self) -> Result<T, StrictError> {
        Err(StrictError::Syntax(self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node<'a>, StrictError> {
        let start = self.pos;
        match self.peek() {
            Some(b'[') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(StrictError::TooDeep);
                }
                self.pos += 1;
                self.ws();
                let mut items = Vec::new();
                if self.eat(b']') {
                    return Ok(Node::Array(items));
                }
                loop {
                    self.ws();
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b']') {
                        return Ok(Node::Array(items));
                    }
                    if !self.eat(b',') {
                        return self.fail();
                    }
                }
            }
            Some(b'{') => {
                if depth + 1 > MAX_DEPTH {
                    return Err(StrictError::TooDeep);
                }
                self.pos += 1;
                self.ws();
                let mut members = Vec::new();
                if self.eat(b'}') {
                    return Ok(Node::Object(members));
                }
                loop {
                    self.ws();
                    let name = self.string()?;
                    self.ws();
                    if !self.eat(b':') {
                        return self.fail();
                    }
                    self.ws();
                    members.push((name, self.value(depth + 1)?));
                    self.ws();
                    if self.eat(b'}') {
                        return Ok(Node::Object(members));
                    }
                    if !self.eat(b',') {
                        return self.fail();
                    }
                }
            }
            Some(b'"') => Ok(Node::Scalar(self.string()?)),
            Some(b'-' | b'0'..=b'9') => {
                self.eat(b'-');
                if !self.eat(b'0') {
                    if !matches!(self.peek(), Some(b'1'..=b'9')) {
                        return self.fail();
                    }
                    self.digits();
                }
                if self.eat(b'.') && self.digits() == 0 {
                    return self.fail();
                }
                if self.eat(b'e') || self.eat(b'E') {
                    if !self.eat(b'+') {
                        self.eat(b'-');
                    }
                    if self.digits() == 0 {
                        return self.fail();
                    }
                }
                Ok(Node::Scalar(&self.s[start..self.pos]))
            }
            _ => {
                for word in [&b"true"[..], b"false", b"null"] {
                    if self.s[self.pos..].starts_with(word) {
                        self.pos += word.len();
                        return Ok(Node::Scalar(word));
                    }
                }
                self.fail()
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A string literal, quotes included. Each run of raw bytes between escapes must be
    /// UTF-8 on its own.
    fn string(&mut self) -> Result<&'a [u8], StrictError> {
        let start = self.pos;
        if !self.eat(b'"') {
            return self.fail();
        }
        let mut run = self.pos;
        loop {
            let Some(b) = self.peek() else {
                return self.fail();
            };
            if (b == b'"' || b == b'\\') && std::str::from_utf8(&self.s[run..self.pos]).is_err() {
                return self.fail();
            }
            self.pos += 1;
            match b {
                b'"' => return Ok(&self.s[start..self.pos]),
                b'\\' => {
                    match self.peek() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.pos += 1;
                        }
                        Some(b'u') => {
                            let hex = self.s.get(self.pos + 1..self.pos + 5);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return self.fail();
                            }
                            self.pos += 5;
                        }
                        _ => return self.fail(),
                    }
                    run = self.pos;
                }
                0x00..=0x1f => return self.fail(),
                _ => {}
            }
        }
    }
}

/// The order the re-emitter writes object members in.
#[derive(Clone, Copy)]
enum Order {
    Reversed,
    Rotated,
}

/// Whitespace to put between tokens, chosen by cycling through the input's bytes.
struct Gaps<'a> {
    choices: &'a [u8],
    next: usize,
}

impl<'a> Gaps<'a> {
    fn none() -> Gaps<'static> {
        Gaps {
            choices: &[],
            next: 0,
        }
    }

    fn from(choices: &'a [u8]) -> Gaps<'a> {
        Gaps { choices, next: 0 }
    }

    fn put(&mut self, out: &mut Vec<u8>) {
        const WHITESPACE: [&[u8]; 6] = [b"", b" ", b"\n", b"\t", b"\r\n", b"  \t \r"];
        if self.choices.is_empty() {
            return;
        }
        let pick = self.choices[self.next % self.choices.len()];
        self.next += 1;
        out.extend_from_slice(WHITESPACE[usize::from(pick) % WHITESPACE.len()]);
    }
}

fn emit(node: &Node<'_>, order: Order, gaps: &mut Gaps<'_>, out: &mut Vec<u8>) {
    match node {
        Node::Scalar(bytes) => out.extend_from_slice(bytes),
        Node::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                gaps.put(out);
                if i > 0 {
                    out.push(b',');
                    gaps.put(out);
                }
                emit(item, order, gaps, out);
            }
            gaps.put(out);
            out.push(b']');
        }
        Node::Object(members) => {
            let mut members: Vec<&(&[u8], Node<'_>)> = members.iter().collect();
            match order {
                Order::Reversed => members.reverse(),
                Order::Rotated => {
                    if !members.is_empty() {
                        members.rotate_left(1);
                    }
                }
            }
            out.push(b'{');
            for (i, (name, value)) in members.into_iter().enumerate() {
                gaps.put(out);
                if i > 0 {
                    out.push(b',');
                    gaps.put(out);
                }
                out.extend_from_slice(name);
                gaps.put(out);
                out.push(b':');
                gaps.put(out);
                emit(value, order, gaps, out);
            }
            gaps.put(out);
            out.push(b'}');
        }
    }
}

// Seeds.

pub(super) const JSON_SEEDS: &[(&str, &str)] = &[
    (
        "object_nested.json",
        r#"{"order":{"items":[{"sku":"b-1","qty":2},{"sku":"a-9","qty":1}],"note":null},"customer":"u1","paid":true}"#,
    ),
    (
        "object_spaced.json",
        "{ \"b\" : 1 ,\n\t\"a\" : [ true , false , null ] ,\r\n \"c\" : { } }\n",
    ),
    (
        "object_many_keys.json",
        r#"{"z":1,"y":2,"x":3,"w":4,"v":5,"u":6,"t":7,"s":8,"aa":9,"a":10,"":11,"A":12}"#,
    ),
    (
        "unicode.json",
        "{\"emoji\":\"\u{1F600}\",\"escaped\":\"\\ud83d\\ude00\",\"\u{e9}\":\"\\u00e9\",\"cjk\":\"\u{6f22}\u{5b57}\",\"rtl\":\"\u{5e9}\u{5dc}\u{5d5}\u{5dd}\"}",
    ),
    (
        "escapes.json",
        r#"["\"\\\/\b\f\n\r\t","\u0000\u001f\u007f","\u0041\u00DF","a\u2028b"]"#,
    ),
    ("escaped_keys.json", r#"{"\u0061":1,"b\n":2,"\"":3}"#),
    (
        "numbers.json",
        "[0,-0,1,-1,12,-12,1.0,1.50,15e-1,1E+2,1e2,0.001,-0.0,0e5,2.5E-3,100.0]",
    ),
    (
        "numbers_big.json",
        "[123456789012345678901234567890,123456789012345678901234567890.5,0.10000000000000000001,-9223372036854775809]",
    ),
    (
        "numbers_exponent_limits.json",
        "[1e1000000000000,1e-1000000000000,9.99e999999999999]",
    ),
    (
        "numbers_exponent_normalised.json",
        "[12e1000000000000,0.01e-1000000000000,10e999999999999,-0.010e-999999999998]",
    ),
    ("scalar_string.json", "\"just a string\""),
    ("scalar_true.json", " true "),
    ("scalar_null.json", "null"),
    ("scalar_integer.json", "42"),
    ("empty_containers.json", "[{},[],{\"a\":[]},[{}]]"),
    (
        "array_of_objects.json",
        r#"[{"b":1,"a":2},{"a":2,"b":1},{"c":{"e":5,"d":4}}]"#,
    ),
    ("duplicate_key.json", r#"{"a":1,"a":2}"#),
    ("duplicate_key_escaped.json", r#"{"a":1,"\u0061":2}"#),
    ("trailing_comma.json", r#"{"a":1,}"#),
    ("leading_zero.json", "[01]"),
    ("bare_fraction.json", "[1.]"),
    ("lone_surrogate.json", r#""\ud800""#),
    ("reversed_surrogates.json", r#""\udc00\ud800""#),
    ("control_in_string.json", "\"a\nb\""),
    ("bad_escape.json", r#""\x41""#),
    ("truncated_object.json", r#"{"a":[1,2"#),
    ("trailing_garbage.json", "{} {}"),
    ("byte_order_mark.json", "\u{feff}{}"),
    ("nan.json", "[NaN,Infinity]"),
    ("comment.json", "{/* no */\"a\":1}"),
    ("single_quotes.json", "{'a':1}"),
    ("empty.json", ""),
    ("whitespace_only.json", " \n\t "),
];
