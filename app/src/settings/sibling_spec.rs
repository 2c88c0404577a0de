//! The value of one `--sibling KEY=V1[,V2…]` flag or one `[[sibling]]` table of a config
//! file, as given: the settings it changes and their values as text, parsed later by the
//! flags' own parsers (`siblings.rs`).

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// One `--sibling` or `[[sibling]]` table: the settings it changes, each with its values as
/// the flag would take them. A key with several values makes one sibling per value (a sweep);
/// the keys with one value apply to each.
#[derive(Debug, Clone, PartialEq)]
pub struct SiblingSpec {
    pub changes: Vec<(String, Vec<String>)>,
}

impl FromStr for SiblingSpec {
    type Err = String;

    /// `KEY=V1[,V2…]`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("{s:?} is not KEY=V1[,V2…] (e.g. lr=0.003,0.03 or schedule=cosine)");
        let (key, values) = s.split_once('=').ok_or_else(bad)?;
        let values: Vec<String> = values.split(',').map(|v| v.trim().to_string()).collect();
        if key.trim().is_empty() || values.iter().any(String::is_empty) {
            return Err(bad());
        }
        Ok(SiblingSpec {
            changes: vec![(key.trim().to_string(), values)],
        })
    }
}

impl<'de> Deserialize<'de> for SiblingSpec {
    /// A TOML table: `lr = 0.003`, `lr = [0.003, 0.03]`, `schedule = "cosine"`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        let table = BTreeMap::<String, toml::Value>::deserialize(d)?;
        if table.is_empty() {
            return Err(D::Error::custom(
                "a [[sibling]] table names at least one setting (e.g. lr = 0.003)",
            ));
        }
        let changes = table
            .into_iter()
            .map(|(key, v)| {
                let values = match v {
                    toml::Value::Array(a) => a.into_iter().map(scalar).collect(),
                    v => scalar(v).map(|v| vec![v]),
                }
                .map_err(|e| D::Error::custom(format!("sibling key {key}: {e}")))?;
                if values.is_empty() {
                    return Err(D::Error::custom(format!(
                        "sibling key {key}: an empty list gives no sibling"
                    )));
                }
                Ok((key, values))
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(SiblingSpec { changes })
    }
}

/// A TOML value as the flag's argument.
fn scalar(v: toml::Value) -> std::result::Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "{other} is not allowed; give a value or a list of values"
        )),
    }
}
