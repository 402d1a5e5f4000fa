//! Typed names. Each kind of name has one type with one validation rule,
//! checked when a value is made (`new`, `parse`, deserialisation), so a value
//! of the type is always valid and no other code re-checks it.
//!
//! | type | bytes | characters |
//! |---|---|---|
//! | [`RunId`] | 1-128 | ASCII letters, digits, `-`, `_`, `.` |
//! | [`ScopeName`] | 1-64 | ASCII letters, digits, `-`, `_`, `.` |
//! | [`FunctionName`] | 1-64 | ASCII letters, digits, `-`, `_` |
//! | [`StepName`] | 1-64 | ASCII letters, digits, `-`, `_`, `.` |
//! | [`NodeId`] | 1-64 | ASCII letters, digits, `-`, `_`, `.` |
//!
//! None of them can hold `/`: run ids, step names and scope-local keys are
//! joined with `/` into state keys (`{run}/{step}`, `{run}/s/{key}`), so a
//! run id with a `/` could alias another run's keys. Names serialise as
//! plain strings (the same bytes in JSON and postcard as a `String`).

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid name of some kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: use {rule}")]
pub struct NameError {
    /// The kind of name, e.g. `run id`.
    pub kind: &'static str,
    /// The rejected value.
    pub value: String,
    /// The rule it broke, in words.
    pub rule: &'static str,
}

/// The characters and length a kind of name allows.
struct Rule {
    kind: &'static str,
    max_len: usize,
    dot: bool,
    words: &'static str,
}

impl Rule {
    fn allows_byte(&self, b: u8) -> bool {
        b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (self.dot && b == b'.')
    }

    fn check(&self, value: &str) -> Result<(), NameError> {
        if !value.is_empty() && value.len() <= self.max_len && value.bytes().all(|b| self.allows_byte(b)) {
            Ok(())
        } else {
            Err(NameError { kind: self.kind, value: value.to_string(), rule: self.words })
        }
    }

    /// `raw` with every character the rule does not allow replaced by `_`,
    /// cut to the longest length; `fallback` when nothing is left.
    fn sanitize(&self, raw: &str, fallback: &str) -> String {
        let s: String = raw
            .chars()
            .map(|c| if c.is_ascii() && self.allows_byte(c as u8) { c } else { '_' })
            .take(self.max_len)
            .collect();
        if s.is_empty() { fallback.to_string() } else { s }
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, dot = $dot:literal, $words:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            const RULE: Rule = Rule { kind: $kind, max_len: $max, dot: $dot, words: $words };
            /// The longest valid name, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validate `value` as this kind of name.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                Self::RULE.check(&value)?;
                Ok($name(value))
            }

            /// Whether `value` is valid as this kind of name.
            pub fn is_valid(value: &str) -> bool {
                Self::RULE.check(value).is_ok()
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The name as an owned string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                $name::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $name::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = NameError;
            fn try_from(s: &str) -> Result<Self, NameError> {
                $name::new(s)
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A workflow run's id: 1-128 bytes of ASCII letters, digits, `-`, `_`
    /// and `.`. It becomes part of state keys and HTTP headers.
    RunId, "run id", 128, dot = true, "1-128 ASCII letters, digits, '-', '_' or '.'"
);
name_type!(
    /// A state scope's name: 1-64 bytes of ASCII letters, digits, `-`, `_`
    /// and `.`. Names starting with `databelt.` (any case) are reserved for
    /// the host ([`ScopeName::is_reserved`]).
    ScopeName, "scope name", 64, dot = true, "1-64 ASCII letters, digits, '-', '_' or '.'"
);
name_type!(
    /// A deployed function's name: 1-64 bytes of ASCII letters, digits, `-`
    /// and `_`. It is a URL path segment of the host API.
    FunctionName, "function name", 64, dot = false, "1-64 ASCII letters, digits, '-' or '_'"
);
name_type!(
    /// A workflow step's name: 1-64 bytes of ASCII letters, digits, `-`, `_`
    /// and `.`.
    StepName, "step name", 64, dot = true, "1-64 ASCII letters, digits, '-', '_' or '.'"
);
name_type!(
    /// A node's id in a continuum: 1-64 bytes of ASCII letters, digits, `-`,
    /// `_` and `.`.
    NodeId, "node id", 64, dot = true, "1-64 ASCII letters, digits, '-', '_' or '.'"
);

/// Scopes whose names start with this prefix (compared without regard to
/// ASCII case) belong to the host: workflow hand-off state lives in
/// `databelt.runs`. Functions cannot open them.
pub const RESERVED_SCOPE_PREFIX: &str = "databelt.";

impl ScopeName {
    /// Whether `name` starts with [`RESERVED_SCOPE_PREFIX`], in any ASCII case
    /// (`Databelt.runs` is as reserved as `databelt.runs`).
    pub fn is_reserved_name(name: &str) -> bool {
        name.len() >= RESERVED_SCOPE_PREFIX.len()
            && name.as_bytes()[..RESERVED_SCOPE_PREFIX.len()].eq_ignore_ascii_case(RESERVED_SCOPE_PREFIX.as_bytes())
    }

    /// Whether this scope is reserved for the host.
    pub fn is_reserved(&self) -> bool {
        Self::is_reserved_name(&self.0)
    }
}

impl FunctionName {
    /// A valid function name made from any text: characters a function name
    /// cannot hold become `_`, the result is cut to 64 bytes, and an empty
    /// result becomes `function`. Used for names derived from file names and
    /// from workflow steps.
    pub fn sanitized(raw: &str) -> FunctionName {
        FunctionName(Self::RULE.sanitize(raw, "function"))
    }

    /// The name a workflow step is deployed under: `{workflow}-{step}`,
    /// sanitised.
    pub fn for_step(workflow: &str, step: &str) -> FunctionName {
        Self::sanitized(&format!("{workflow}-{step}"))
    }
}

impl RunId {
    /// A valid run id made from any text (as [`FunctionName::sanitized`],
    /// with `.` allowed and up to 128 bytes); `run` when nothing is left.
    pub fn sanitized(raw: &str) -> RunId {
        RunId(Self::RULE.sanitize(raw, "run"))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn examples() {
        assert!(ScopeName::is_valid("counters"));
        assert!(ScopeName::is_valid("run-1.tmp_x"));
        assert!(!ScopeName::is_valid(""));
        assert!(!ScopeName::is_valid("a b"));
        assert!(!ScopeName::is_valid("ä"));
        assert!(!ScopeName::is_valid(&"x".repeat(65)));
        assert!(RunId::is_valid(&"r".repeat(128)) && !RunId::is_valid(&"r".repeat(129)));
        assert!(!RunId::is_valid("a/s/b"), "a run id with '/' could alias another run's keys");
        assert!(!FunctionName::is_valid("a.b"));
        assert!(NodeId::is_valid("sat-1.eu"));
        assert_eq!(FunctionName::for_step("wildfire", "detect.1").as_str(), "wildfire-detect_1");
        assert_eq!(FunctionName::sanitized("").as_str(), "function");
    }

    #[test]
    fn reserved_scopes_match_in_any_case() {
        for s in ["databelt.runs", "Databelt.runs", "DATABELT.x", "dAtAbElT."] {
            assert!(ScopeName::is_reserved_name(s), "{s}");
        }
        for s in ["databelt", "databeltx", "my.databelt.runs", "runs"] {
            assert!(!ScopeName::is_reserved_name(s), "{s}");
        }
    }

    #[test]
    fn serde_validates_and_keeps_the_string_encoding() {
        let n: RunId = serde_json::from_str("\"run-1\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"run-1\"");
        let bad = serde_json::from_str::<RunId>("\"a/b\"").unwrap_err().to_string();
        assert!(bad.contains("invalid run id"), "{bad}");
    }

    fn check_rule<T>(s: &str, max: usize, dot: bool, new: fn(&str) -> Result<T, NameError>) {
        let expected = !s.is_empty()
            && s.len() <= max
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (dot && b == b'.'));
        assert_eq!(new(s).is_ok(), expected, "{s:?}");
    }

    proptest! {
        #[test]
        fn each_type_accepts_exactly_its_rule(s in "[a-zA-Z0-9._/ \u{e4}-]{0,140}") {
            check_rule(&s, 128, true, |s| RunId::new(s));
            check_rule(&s, 64, true, |s| ScopeName::new(s));
            check_rule(&s, 64, false, |s| FunctionName::new(s));
            check_rule(&s, 64, true, |s| StepName::new(s));
            check_rule(&s, 64, true, |s| NodeId::new(s));
        }

        #[test]
        fn no_name_holds_a_slash(a in "[a-z]{1,8}", b in "[a-z]{1,8}") {
            let joined = format!("{a}/{b}");
            prop_assert!(RunId::new(joined.as_str()).is_err());
            prop_assert!(StepName::new(joined.as_str()).is_err());
            prop_assert!(ScopeName::new(joined.as_str()).is_err());
            prop_assert!(NodeId::new(joined.as_str()).is_err());
            prop_assert!(FunctionName::new(joined.as_str()).is_err());
        }

        #[test]
        fn sanitized_names_are_always_valid(raw in ".{0,200}") {
            prop_assert!(FunctionName::is_valid(&FunctionName::sanitized(&raw)));
            prop_assert!(RunId::is_valid(&RunId::sanitized(&raw)));
        }

        #[test]
        fn valid_names_round_trip_through_serde(s in "[a-zA-Z0-9_-]{1,64}") {
            let n = StepName::new(s.as_str()).unwrap();
            let json = serde_json::to_string(&n).unwrap();
            prop_assert_eq!(serde_json::from_str::<StepName>(&json).unwrap(), n);
        }

        #[test]
        fn reserved_prefix_is_case_insensitive(prefix in "[dD][aA][tT][aA][bB][eE][lL][tT]\\.", rest in "[a-z]{0,10}") {
            let name = format!("{prefix}{rest}");
            prop_assert!(ScopeName::is_reserved_name(&name));
        }
    }
}
