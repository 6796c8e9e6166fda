//! The stand-in API server's objects and their history: every object by resource,
//! namespace and name, one cluster-wide resourceVersion counter, and the list of changes
//! (ADDED, MODIFIED, DELETED) a watch replays from the version it asks for. Changes older
//! than [`Store::compact`] are forgotten, as etcd compaction does, so a watch from before
//! then gets `410 Gone`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

/// Where an object lives: its resource (plural, as in the URL), namespace (empty for
/// cluster-scoped objects) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub resource: String,
    pub namespace: String,
    pub name: String,
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
pub struct Change {
    pub version: u64,
    pub key: ObjectKey,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
}

/// Why a write was refused, as the API server's `Status` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Store {
    objects: BTreeMap<ObjectKey, Value>,
    changes: Vec<Change>,
    version: u64,
    /// Changes at or below this version are gone.
    compacted: u64,
    next_uid: u64,
}

impl Store {
    /// The latest resourceVersion.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Value> {
        self.objects.get(key).cloned()
    }

    /// Every object of `resource` (in `namespace`, or all namespaces when `None`) that
    /// `selectors` accept, in key order.
    pub fn list(
        &self,
        resource: &str,
        namespace: Option<&str>,
        selectors: &Selectors,
    ) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|(key, object)| {
                key.resource == resource
                    && namespace.is_none_or(|ns| key.namespace == ns)
                    && selectors.accept(object)
            })
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Creates the object, or refuses with 409 AlreadyExists.
    pub fn create(&mut self, key: ObjectKey, object: Value) -> Result<Value, Refusal> {
        if self.objects.contains_key(&key) {
            return Err(Refusal {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{}\" already exists", key.resource, key.name),
            });
        }
        Ok(self.write(key, object, "ADDED"))
    }

    /// Replaces the object. A `metadata.resourceVersion` in `object` must be the stored
    /// one (optimistic concurrency), else 409 Conflict; a missing object is 404.
    pub fn replace(&mut self, key: ObjectKey, object: Value) -> Result<Value, Refusal> {
        let Some(current) = self.objects.get(&key) else {
            return Err(not_found(&key));
        };
        let asked = object["metadata"]["resourceVersion"].as_str();
        let stored = current["metadata"]["resourceVersion"].as_str();
        if asked.is_some_and(|asked| Some(asked) != stored) {
            return Err(Refusal {
                code: 409,
                reason: "Conflict",
                message: format!(
                    "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                    key.resource, key.name
                ),
            });
        }
        Ok(self.write(key, object, "MODIFIED"))
    }

    /// Creates or replaces, whatever is there (what a test sets).
    pub fn put(&mut self, key: ObjectKey, mut object: Value) -> Value {
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        if let Some(metadata) = object["metadata"].as_object_mut() {
            metadata.remove("resourceVersion");
        }
        self.write(key, object, kind)
    }

    pub fn delete(&mut self, key: &ObjectKey) -> Result<Value, Refusal> {
        let mut object = self.objects.remove(key).ok_or_else(|| not_found(key))?;
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        self.changes.push(Change {
            version: self.version,
            key: key.clone(),
            kind: "DELETED",
            object: object.clone(),
        });
        Ok(object)
    }

    /// The changes of `resource` (in `namespace`, if given) after version `since`, or
    /// `None` when some of them were compacted away (the watch must relist).
    pub fn changes_after(
        &self,
        since: u64,
        resource: &str,
        namespace: Option<&str>,
        selectors: &Selectors,
    ) -> Option<Vec<Change>> {
        if since < self.compacted {
            return None;
        }
        Some(
            self.changes
                .iter()
                .filter(|change| {
                    change.version > since
                        && change.key.resource == resource
                        && namespace.is_none_or(|ns| change.key.namespace == ns)
                        && selectors.accept(&change.object)
                })
                .cloned()
                .collect(),
        )
    }

    /// Forgets every change so far: a watch from an older version gets 410 Gone.
    pub fn compact(&mut self) {
        self.compacted = self.version;
        self.changes.clear();
    }

    fn write(&mut self, key: ObjectKey, mut object: Value, kind: &'static str) -> Value {
        self.version += 1;
        let uid = match self.objects.get(&key) {
            Some(current) => current["metadata"]["uid"].clone(),
            None => {
                self.next_uid += 1;
                json!(format!("00000000-0000-4000-8000-{:012}", self.next_uid))
            }
        };
        let metadata = &mut object["metadata"];
        metadata["name"] = json!(key.name);
        if !key.namespace.is_empty() {
            metadata["namespace"] = json!(key.namespace);
        }
        metadata["resourceVersion"] = json!(self.version.to_string());
        metadata["uid"] = uid;
        if metadata.get("creationTimestamp").is_none() {
            metadata["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        self.objects.insert(key.clone(), object.clone());
        self.changes.push(Change {
            version: self.version,
            key,
            kind,
            object: object.clone(),
        });
        object
    }
}

pub fn not_found(key: &ObjectKey) -> Refusal {
    Refusal {
        code: 404,
        reason: "NotFound",
        message: format!("{} \"{}\" not found", key.resource, key.name),
    }
}

/// `labelSelector` (`k=v`, `k!=v`, `k`, `!k`, comma-separated) and `fieldSelector`
/// (`metadata.name=x`, `metadata.namespace=x`): the forms Seam's control plane uses.
#[derive(Debug, Default, Clone)]
pub struct Selectors {
    labels: Vec<(String, Option<String>, bool)>,
    fields: Vec<(String, String)>,
}

impl Selectors {
    pub fn parse(label_selector: Option<&str>, field_selector: Option<&str>) -> Self {
        let mut selectors = Self::default();
        for term in label_selector
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let term = term.trim();
            if let Some((key, value)) = term.split_once("!=") {
                selectors
                    .labels
                    .push((key.into(), Some(value.into()), false));
            } else if let Some((key, value)) = term.split_once('=') {
                let value = value.trim_start_matches('=');
                selectors
                    .labels
                    .push((key.into(), Some(value.into()), true));
            } else if let Some(key) = term.strip_prefix('!') {
                selectors.labels.push((key.into(), None, false));
            } else {
                selectors.labels.push((term.into(), None, true));
            }
        }
        for term in field_selector
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            if let Some((path, value)) = term.split_once('=') {
                let value = value.trim_start_matches('=');
                selectors.fields.push((path.into(), value.into()));
            }
        }
        selectors
    }

    pub fn accept(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let labels_match = self.labels.iter().all(|(key, value, wanted)| {
            let present = labels[key.as_str()].as_str();
            match value {
                Some(value) => (present == Some(value.as_str())) == *wanted,
                None => present.is_some() == *wanted,
            }
        });
        let fields_match = self.fields.iter().all(|(path, value)| {
            let mut field = object;
            for part in path.split('.') {
                field = &field[part];
            }
            field.as_str() == Some(value.as_str())
        });
        labels_match && fields_match
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            resource: "configmaps".into(),
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn versions_conflicts_and_compaction_behave_as_the_api_server_does() {
        let mut store = Store::default();
        let created = store.create(key("a"), json!({"metadata": {}})).unwrap();
        assert_eq!(created["metadata"]["resourceVersion"], "1");
        assert_eq!(store.create(key("a"), json!({})).unwrap_err().code, 409);
        let stale = json!({"metadata": {"resourceVersion": "0"}});
        assert_eq!(
            store.replace(key("a"), stale).unwrap_err().reason,
            "Conflict"
        );
        let fresh = json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "y"}});
        assert_eq!(
            store.replace(key("a"), fresh).unwrap()["metadata"]["resourceVersion"],
            "2"
        );
        let none = Selectors::default();
        let changes = store
            .changes_after(1, "configmaps", Some("shop"), &none)
            .unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind, "MODIFIED");
        store.compact();
        assert!(store.changes_after(1, "configmaps", None, &none).is_none());
        assert_eq!(
            store
                .changes_after(2, "configmaps", None, &none)
                .unwrap()
                .len(),
            0
        );
    }

    #[test]
    fn selectors_match_labels_and_fields() {
        let object = json!({"metadata": {"name": "a", "labels": {"seam.io/inject": "enabled"}}});
        let accepts = |labels: &str, fields: &str| {
            Selectors::parse(Some(labels), Some(fields)).accept(&object)
        };
        assert!(accepts("seam.io/inject=enabled", "metadata.name=a"));
        assert!(accepts("seam.io/inject", ""));
        assert!(!accepts("seam.io/inject!=enabled", ""));
        assert!(!accepts("!seam.io/inject", ""));
        assert!(!accepts("", "metadata.name=b"));
    }
}
