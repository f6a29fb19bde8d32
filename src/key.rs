//! Idempotency keys, scopes, and how the pair is framed into one storage key.

use std::borrow::Cow;
use std::fmt;

use crate::error::KeyError;

/// The longest scope, in bytes of UTF-8.
pub const MAX_SCOPE_LEN: usize = 255;

/// The longest key any [`KeyPolicy::Opaque`] may allow, in bytes of UTF-8.
pub const MAX_KEY_LEN_LIMIT: usize = 4096;

/// The default key length limit of [`KeyPolicy::Opaque`], in bytes.
pub const DEFAULT_MAX_KEY_LEN: usize = 255;

/// The longest key any [`KeyPolicy::OpaqueChars`] may allow, in characters: a key of that
/// many characters of four bytes each is [`MAX_KEY_LEN_LIMIT`] bytes long.
pub const MAX_KEY_CHARS_LIMIT: usize = MAX_KEY_LEN_LIMIT / 4;

/// Which idempotency keys a store accepts.
///
/// ```
/// use idemdb::{KeyPolicy, UuidVersions};
///
/// let opaque = KeyPolicy::default();
/// assert!(opaque.validate("order-4815").is_ok());
/// assert!(opaque.validate("").is_err());
///
/// let uuids = KeyPolicy::Uuid(UuidVersions::only(&[4, 7]).unwrap());
/// assert!(uuids.validate("7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d").is_ok());
/// assert!(uuids.validate("not-a-uuid").is_err());
///
/// // "256 characters or fewer", as people count them: 256 'é' are 512 bytes.
/// let chars = KeyPolicy::OpaqueChars { max_chars: 256 };
/// assert!(chars.validate(&"é".repeat(256)).is_ok());
/// assert!(chars.validate(&"é".repeat(257)).is_err());
/// ```
///
/// A store checks its policy's limits when it opens (an out-of-range limit is
/// [`Error::InvalidConfig`](crate::Error::InvalidConfig)). The HTTP layer (feature `http`)
/// also refuses keys that contain a comma, whatever the policy: see `idemdb::http`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyPolicy {
    /// Any non-empty UTF-8 string without control characters, up to `max_len` bytes.
    Opaque {
        /// Limit in bytes (1 ..= [`MAX_KEY_LEN_LIMIT`]).
        max_len: usize,
    },
    /// Any non-empty UTF-8 string without control characters, up to `max_chars` characters
    /// (Unicode scalar values), for APIs that state their limit in characters.
    OpaqueChars {
        /// Limit in characters (1 ..= [`MAX_KEY_CHARS_LIMIT`]).
        max_chars: usize,
    },
    /// A UUID in RFC 9562 hyphenated text form, of one of the allowed versions. Upper- and
    /// lower-case hex digits are accepted and name the same key.
    Uuid(UuidVersions),
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy::Opaque {
            max_len: DEFAULT_MAX_KEY_LEN,
        }
    }
}

impl KeyPolicy {
    /// Checks `key` against the policy and returns the form it is stored under: the key
    /// itself, or for UUIDs its lower-case form.
    pub fn validate<'k>(&self, key: &'k str) -> Result<Cow<'k, str>, KeyError> {
        match self {
            KeyPolicy::Opaque { max_len } => {
                check_text(key, *max_len)?;
                Ok(Cow::Borrowed(key))
            }
            KeyPolicy::OpaqueChars { max_chars } => {
                check_text(key, MAX_KEY_LEN_LIMIT)?;
                let len = key.chars().count();
                if len > *max_chars {
                    return Err(KeyError::TooManyCharacters {
                        len,
                        max: *max_chars,
                    });
                }
                Ok(Cow::Borrowed(key))
            }
            KeyPolicy::Uuid(versions) => validate_uuid(key, *versions),
        }
    }

    /// Why the policy's own limit is out of range, if it is: checked when a store opens.
    pub(crate) fn limit_error(&self) -> Option<String> {
        match self {
            KeyPolicy::Opaque { max_len } if !(1..=MAX_KEY_LEN_LIMIT).contains(max_len) => Some(
                format!("max_len {max_len} is not between 1 and {MAX_KEY_LEN_LIMIT}"),
            ),
            KeyPolicy::OpaqueChars { max_chars }
                if !(1..=MAX_KEY_CHARS_LIMIT).contains(max_chars) =>
            {
                Some(format!(
                    "max_chars {max_chars} is not between 1 and {MAX_KEY_CHARS_LIMIT}"
                ))
            }
            _ => None,
        }
    }
}

/// A set of UUID versions (1 to 8) a [`KeyPolicy::Uuid`] accepts.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct UuidVersions(u16);

impl UuidVersions {
    /// Every version RFC 9562 defines (1 to 8).
    pub const ALL: UuidVersions = UuidVersions(0b1_1111_1110);

    /// Only the listed versions; `None` if the list is empty or names a version outside 1..=8.
    pub fn only(versions: &[u8]) -> Option<UuidVersions> {
        let mut bits = 0u16;
        for &v in versions {
            if !(1..=8).contains(&v) {
                return None;
            }
            bits |= 1 << v;
        }
        (bits != 0).then_some(UuidVersions(bits))
    }

    /// Whether `version` is in the set.
    pub fn contains(self, version: u8) -> bool {
        version <= 15 && self.0 & (1 << version) != 0
    }

    fn list(self) -> String {
        (1..=8u8)
            .filter(|v| self.contains(*v))
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for UuidVersions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UuidVersions[{}]", self.list())
    }
}

/// Checks a scope: 1 to [`MAX_SCOPE_LEN`] bytes of UTF-8 without control characters.
pub fn validate_scope(scope: &str) -> Result<(), KeyError> {
    check_text(scope, MAX_SCOPE_LEN)
}

fn check_text(text: &str, max_len: usize) -> Result<(), KeyError> {
    if text.is_empty() {
        return Err(KeyError::Empty);
    }
    if text.len() > max_len {
        return Err(KeyError::TooLong {
            len: text.len(),
            max: max_len,
        });
    }
    if let Some((index, c)) = text.char_indices().find(|(_, c)| c.is_control()) {
        return Err(KeyError::ControlCharacter {
            index,
            code: u32::from(c),
        });
    }
    Ok(())
}

fn validate_uuid(key: &str, versions: UuidVersions) -> Result<Cow<'_, str>, KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    let bytes = key.as_bytes();
    if bytes.len() != 36 {
        return Err(KeyError::NotAUuid {
            reason: "it must be exactly 36 characters long",
        });
    }
    for (i, b) in bytes.iter().enumerate() {
        let hyphen_position = matches!(i, 8 | 13 | 18 | 23);
        if hyphen_position && *b != b'-' {
            return Err(KeyError::NotAUuid {
                reason: "hyphens must separate groups of 8, 4, 4, 4 and 12 digits",
            });
        }
        if !hyphen_position && !b.is_ascii_hexdigit() {
            return Err(KeyError::NotAUuid {
                reason: "it contains a character that is not a hexadecimal digit",
            });
        }
    }
    let uuid = uuid::Uuid::try_parse(key).map_err(|_| KeyError::NotAUuid {
        reason: "it does not parse as a UUID",
    })?;
    let version = uuid.get_version_num() as u8;
    // Nil (all zeros) and Max (all ones) UUIDs have no variant bits to check; their versions
    // (0 and 15) are never allowed, so check the version first for a clearer message.
    if !(1..=8).contains(&version) || uuid.get_variant() != uuid::Variant::RFC4122 {
        if (1..=8).contains(&version) {
            return Err(KeyError::UuidVariant);
        }
        return Err(KeyError::UuidVersion {
            version,
            allowed: versions.list(),
        });
    }
    if !versions.contains(version) {
        return Err(KeyError::UuidVersion {
            version,
            allowed: versions.list(),
        });
    }
    if bytes.iter().any(u8::is_ascii_uppercase) {
        Ok(Cow::Owned(key.to_ascii_lowercase()))
    } else {
        Ok(Cow::Borrowed(key))
    }
}

/// Frames (scope, key) into one storage key: `[scope length: 1 byte][scope][key]`.
///
/// The explicit length makes the framing injective: `("a:b", "c")` and `("a", "b:c")` give
/// different storage keys. All keys of a scope share the prefix `[len][scope]`, so a scope
/// is one contiguous range of the table.
pub(crate) fn storage_key(scope: &str, key: &str) -> Vec<u8> {
    let mut out = scope_prefix(scope);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The prefix every storage key of `scope` starts with. `scope` is already validated, so
/// its length fits in the one length byte.
pub(crate) fn scope_prefix(scope: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + scope.len() + 40);
    out.push(u8::try_from(scope.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(scope.as_bytes());
    out
}

/// Splits a storage key back into (scope, key); `None` if the bytes are not a framed key.
pub(crate) fn split_storage_key(bytes: &[u8]) -> Option<(&str, &str)> {
    let (&len, rest) = bytes.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let (scope, key) = rest.split_at(len);
    Some((
        std::str::from_utf8(scope).ok()?,
        std::str::from_utf8(key).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_is_injective() {
        assert_ne!(storage_key("a:b", "c"), storage_key("a", "b:c"));
        assert_ne!(storage_key("ab", "c"), storage_key("a", "bc"));
        let k = storage_key("tenant", "key-1");
        assert_eq!(split_storage_key(&k), Some(("tenant", "key-1")));
        assert_eq!(split_storage_key(&[5, b'a']), None);
        assert_eq!(split_storage_key(&[]), None);
    }

    #[test]
    fn opaque_rules() {
        let p = KeyPolicy::Opaque { max_len: 4 };
        assert_eq!(p.validate(""), Err(KeyError::Empty));
        assert!(p.validate("abcd").is_ok());
        assert_eq!(
            p.validate("abcde"),
            Err(KeyError::TooLong { len: 5, max: 4 })
        );
        assert_eq!(
            p.validate("a\0"),
            Err(KeyError::ControlCharacter { index: 1, code: 0 })
        );
        assert!(matches!(
            p.validate("é\u{7f}"),
            Err(KeyError::ControlCharacter {
                index: 2,
                code: 0x7f
            })
        ));
        // multi-byte characters count in bytes
        assert!(matches!(
            p.validate("ééé"),
            Err(KeyError::TooLong { len: 6, .. })
        ));
    }

    #[test]
    fn opaque_chars_rules() {
        let p = KeyPolicy::OpaqueChars { max_chars: 3 };
        assert_eq!(p.validate(""), Err(KeyError::Empty));
        assert!(p.validate("abc").is_ok());
        // characters, not bytes: three two-byte characters fit, a fourth does not
        assert!(p.validate("ééé").is_ok());
        assert_eq!(
            p.validate("éééé"),
            Err(KeyError::TooManyCharacters { len: 4, max: 3 })
        );
        assert_eq!(
            p.validate("a\u{1}"),
            Err(KeyError::ControlCharacter { index: 1, code: 1 })
        );
        assert_eq!(p.limit_error(), None);
        assert!(
            KeyPolicy::OpaqueChars { max_chars: 0 }
                .limit_error()
                .is_some()
        );
        assert!(
            KeyPolicy::OpaqueChars {
                max_chars: MAX_KEY_CHARS_LIMIT + 1
            }
            .limit_error()
            .is_some()
        );
        let widest = "\u{10348}".repeat(MAX_KEY_CHARS_LIMIT);
        assert_eq!(widest.len(), MAX_KEY_LEN_LIMIT);
        assert!(
            KeyPolicy::OpaqueChars {
                max_chars: MAX_KEY_CHARS_LIMIT
            }
            .validate(&widest)
            .is_ok()
        );
    }

    #[test]
    fn uuid_rules() {
        let p = KeyPolicy::Uuid(UuidVersions::only(&[4]).expect("valid set"));
        assert!(p.validate("7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d").is_ok());
        assert_eq!(
            p.validate("7F1C0B9E-2A4D-4C8E-9B1A-3E5F6A7B8C9D")
                .expect("upper case accepted")
                .as_ref(),
            "7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9d"
        );
        assert!(matches!(
            p.validate("7f1c0b9e2a4d4c8e9b1a3e5f6a7b8c9d"),
            Err(KeyError::NotAUuid { .. })
        ));
        assert!(matches!(
            p.validate("{7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9}"),
            Err(KeyError::NotAUuid { .. })
        ));
        assert!(matches!(
            p.validate("7f1c0b9e-2a4d-7c8e-9b1a-3e5f6a7b8c9d"),
            Err(KeyError::UuidVersion { version: 7, .. })
        ));
        assert!(matches!(
            p.validate("00000000-0000-0000-0000-000000000000"),
            Err(KeyError::UuidVersion { version: 0, .. })
        ));
        assert!(matches!(
            p.validate("7f1c0b9e-2a4d-4c8e-1b1a-3e5f6a7b8c9d"),
            Err(KeyError::UuidVariant)
        ));
        assert!(matches!(
            p.validate("7f1c0b9e-2a4d-4c8e-9b1a-3e5f6a7b8c9g"),
            Err(KeyError::NotAUuid { .. })
        ));
    }

    #[test]
    fn version_sets() {
        assert!(UuidVersions::only(&[]).is_none());
        assert!(UuidVersions::only(&[9]).is_none());
        assert!(UuidVersions::only(&[0]).is_none());
        let s = UuidVersions::only(&[3, 4, 7]).expect("valid set");
        assert!(s.contains(3) && s.contains(4) && s.contains(7) && !s.contains(1));
        assert_eq!(s.list(), "3, 4, 7");
        assert!(!UuidVersions::ALL.contains(0) && UuidVersions::ALL.contains(8));
    }
}
