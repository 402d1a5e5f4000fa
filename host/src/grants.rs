//! Which scopes a deployed function may open, and how (issue 13 §3): a
//! per-function allowlist fixed at deploy time, below the host-wide
//! `allowed_scopes`. A function deployed with grants may open only the
//! scopes they name; a write (`set`, `delete`, `set-many`, `delete-many`,
//! `increment`, `compare-and-swap`) on a read-only scope fails with
//! `access-denied` and changes nothing. Its run scope
//! (`context.run-state`) is always its own to read and write. A function
//! deployed without grants may open every scope the host allows.

use std::collections::BTreeMap;

use databelt_types::ScopeName;

use crate::error::{Error, Result};

/// How a function may use a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScopeAccess {
    /// Read only (`get`, `get-entry`, `exists`, `list-keys`, `get-many`).
    ReadOnly,
    /// Read and write.
    ReadWrite,
}

/// A function's scope allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScopeGrants {
    scopes: BTreeMap<String, ScopeAccess>,
}

impl ScopeGrants {
    /// Grants from `(scope, access)` pairs. Scope names must be valid and
    /// not reserved for the host.
    pub fn new<'a>(grants: impl IntoIterator<Item = (&'a str, ScopeAccess)>) -> Result<ScopeGrants> {
        let mut scopes = BTreeMap::new();
        for (name, access) in grants {
            ScopeName::new(name)?;
            if ScopeName::is_reserved_name(name) {
                return Err(Error::BadInput(format!("scope `{name}` is reserved for the host and cannot be granted")));
            }
            scopes.insert(name.to_string(), access);
        }
        Ok(ScopeGrants { scopes })
    }

    /// Parse `name:rw,other:ro` (the form of the deploy route's `scopes`
    /// parameter); an empty text grants nothing.
    pub fn parse(spec: &str) -> Result<ScopeGrants> {
        let mut pairs = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, access) = item
                .rsplit_once(':')
                .ok_or_else(|| Error::BadInput(format!("scope grant `{item}` must be `name:rw` or `name:ro`")))?;
            let access = match access {
                "rw" => ScopeAccess::ReadWrite,
                "ro" => ScopeAccess::ReadOnly,
                other => return Err(Error::BadInput(format!("scope grant `{item}`: `{other}` is not `rw` or `ro`"))),
            };
            pairs.push((name, access));
        }
        ScopeGrants::new(pairs)
    }

    /// How the function may use `scope`; `None`: not at all.
    pub fn access(&self, scope: &str) -> Option<ScopeAccess> {
        self.scopes.get(scope).copied()
    }
}

impl std::fmt::Display for ScopeGrants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self
            .scopes
            .iter()
            .map(|(n, a)| format!("{n}:{}", if *a == ScopeAccess::ReadWrite { "rw" } else { "ro" }))
            .collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_parse_print_and_refuse_bad_specs() {
        let g = ScopeGrants::parse("orders:rw, stock:ro").unwrap_or_default();
        assert_eq!(g.access("orders"), Some(ScopeAccess::ReadWrite));
        assert_eq!(g.access("stock"), Some(ScopeAccess::ReadOnly));
        assert_eq!(g.access("other"), None);
        assert_eq!(g.to_string(), "orders:rw,stock:ro");
        assert!(ScopeGrants::parse("orders").is_err());
        assert!(ScopeGrants::parse("orders:rx").is_err());
        assert!(ScopeGrants::parse("databelt.runs:rw").is_err());
        assert!(ScopeGrants::parse("no/slash:ro").is_err());
        assert_eq!(ScopeGrants::parse("").unwrap_or_default(), ScopeGrants::default());
    }
}
