//! A YAML document as data, keeping every key in the order it was written, so a compose
//! file read and written again keeps the keys `seamctl inject` knows nothing about where
//! their authors put them. serde-saphyr reads and writes it; what it cannot express
//! (comments, anchors: aliases and merge keys are expanded) is lost, which the README says.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

/// One YAML node.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Yaml>),
    Map(Mapping),
}

/// A mapping in the order it was written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping(Vec<(Yaml, Yaml)>);

impl Yaml {
    pub fn str(text: &str) -> Self {
        Self::Str(text.to_owned())
    }

    /// A sequence of strings.
    pub fn strs<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        Self::Seq(items.into_iter().map(Self::str).collect())
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&Mapping> {
        match self {
            Self::Map(map) => Some(map),
            _ => None,
        }
    }

    pub fn as_map_mut(&mut self) -> Option<&mut Mapping> {
        match self {
            Self::Map(map) => Some(map),
            _ => None,
        }
    }

    /// A scalar as compose reads it where it takes a string or a number (a port, a count).
    pub fn scalar_text(&self) -> Option<String> {
        match self {
            Self::Str(text) => Some(text.clone()),
            Self::Int(number) => Some(number.to_string()),
            Self::UInt(number) => Some(number.to_string()),
            _ => None,
        }
    }

    /// The node's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Int(_) | Self::UInt(_) | Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::Seq(_) => "a list",
            Self::Map(_) => "a map",
        }
    }
}

impl Mapping {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, key: &str) -> Option<&Yaml> {
        self.0
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, value)| value)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Yaml> {
        self.0
            .iter_mut()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, value)| value)
    }

    /// Sets `key` in place when it is there, else at the end.
    pub fn insert(&mut self, key: &str, value: Yaml) {
        match self.get_mut(key) {
            Some(slot) => *slot = value,
            None => self.0.push((Yaml::str(key), value)),
        }
    }

    /// The value of `key`, made a map (at the end) when absent.
    pub fn entry_map(&mut self, key: &str) -> &mut Mapping {
        if !matches!(self.get(key), Some(Yaml::Map(_))) {
            self.insert(key, Yaml::Map(Mapping::new()));
        }
        self.get_mut(key)
            .and_then(Yaml::as_map_mut)
            .expect("the entry was just made a map")
    }

    pub fn remove(&mut self, key: &str) -> Option<Yaml> {
        let index = self.0.iter().position(|(k, _)| k.as_str() == Some(key))?;
        Some(self.0.remove(index).1)
    }

    /// The entries whose keys are strings, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Yaml)> {
        self.0
            .iter()
            .filter_map(|(key, value)| Some((key.as_str()?, value)))
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries().map(|(key, _)| key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

impl<'de> Deserialize<'de> for Yaml {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(YamlVisitor)
    }
}

struct YamlVisitor;

impl<'de> Visitor<'de> for YamlVisitor {
    type Value = Yaml;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Yaml, E> {
        Ok(Yaml::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Yaml, D::Error> {
        Yaml::deserialize(deserializer)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Yaml, E> {
        Ok(Yaml::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Yaml, E> {
        Ok(Yaml::Int(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Yaml, E> {
        Ok(i64::try_from(value).map_or(Yaml::UInt(value), Yaml::Int))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Yaml, E> {
        Ok(Yaml::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Yaml, E> {
        Ok(Yaml::str(value))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Yaml, E> {
        Ok(Yaml::Str(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Yaml, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Yaml::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Yaml, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Yaml::Map(Mapping(entries)))
    }
}

impl Serialize for Yaml {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => serializer.serialize_unit(),
            Self::Bool(value) => serializer.serialize_bool(*value),
            Self::Int(value) => serializer.serialize_i64(*value),
            Self::UInt(value) => serializer.serialize_u64(*value),
            Self::Float(value) => serializer.serialize_f64(*value),
            Self::Str(value) => serializer.serialize_str(value),
            Self::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Map(map) => map.serialize(serializer),
        }
    }
}

impl Serialize for Mapping {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let value: Yaml = serde_saphyr::from_str(text).expect("valid YAML");
        serde_saphyr::to_string(&value).expect("serializable")
    }

    #[test]
    fn keys_keep_their_order_and_types() {
        let text = "zeta: 1\nalpha:\n  b: true\n  a: 0.5\nports:\n- '8080:80'\n- 80\n";
        let value: Yaml = serde_saphyr::from_str(text).unwrap();
        let map = value.as_map().unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["zeta", "alpha", "ports"]);
        assert_eq!(round_trip(text), round_trip(&round_trip(text)));
        let again: Yaml = serde_saphyr::from_str(&round_trip(text)).unwrap();
        assert_eq!(again, value);
    }

    #[test]
    fn strings_that_look_like_other_types_stay_strings() {
        // YAML 1.1 readers (docker-compose's PyYAML) read an unquoted 22:22 as a number.
        for text in ["22:22", "yes", "1.0", "null", "0755"] {
            let written = serde_saphyr::to_string(&Yaml::str(text)).unwrap();
            let read: Yaml = serde_saphyr::from_str(&written).unwrap();
            assert_eq!(read, Yaml::str(text), "{text} was written as {written}");
            assert!(written.contains('\'') || written.contains('"'), "{written}");
        }
    }

    #[test]
    fn merge_keys_are_expanded() {
        let text = "x-base: &base\n  restart: always\napi:\n  <<: *base\n  image: api\n";
        let value: Yaml = serde_saphyr::from_str(text).unwrap();
        let api = value
            .as_map()
            .unwrap()
            .get("api")
            .unwrap()
            .as_map()
            .unwrap();
        assert_eq!(api.get("restart"), Some(&Yaml::str("always")));
        assert_eq!(api.get("image"), Some(&Yaml::str("api")));
    }
}
