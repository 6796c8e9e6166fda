//! Reading a compose file: its YAML as an ordered document ([`Yaml`]), checked only as far
//! as injecting needs (a map with a `services` map of maps); everything else is kept as
//! written for docker-compose to judge. Malformed YAML is refused at `file:line:column`.

use std::path::{Path, PathBuf};

use super::yaml::{Mapping, Yaml};
use crate::mesh_file::wording::without_position;

/// A compose file, read.
#[derive(Debug)]
pub struct ComposeFile {
    pub path: PathBuf,
    pub document: Mapping,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: cannot read the compose file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: u64,
        column: u64,
        reason: String,
    },
    #[error("{}: {reason}", path.display())]
    NotCompose { path: PathBuf, reason: String },
}

/// Reads and checks the compose file at `path`.
pub fn read(path: &Path) -> Result<ComposeFile, ReadError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses compose file text; `path` is for the messages.
pub fn parse(path: &Path, text: &str) -> Result<ComposeFile, ReadError> {
    let not_compose = |reason: String| ReadError::NotCompose {
        path: path.to_owned(),
        reason,
    };
    let document: Yaml = serde_saphyr::from_str(text).map_err(|err| {
        let (line, column) = err.location().map_or((0, 0), |at| (at.line(), at.column()));
        let reason = match err.without_snippet() {
            serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
                format!("{key:?} is given twice in one map (the second time here)")
            }
            other => {
                let message = other.to_string();
                without_position(message.lines().next().unwrap_or("malformed YAML"))
            }
        };
        ReadError::Malformed {
            path: path.to_owned(),
            line,
            column,
            reason,
        }
    })?;
    let Yaml::Map(document) = document else {
        return Err(not_compose(format!(
            "a compose file is a map with a `services` key, not {}",
            document.kind()
        )));
    };
    match document.get("services") {
        Some(Yaml::Map(services)) => {
            for (name, service) in services.entries() {
                if !matches!(service, Yaml::Map(_)) {
                    return Err(not_compose(format!(
                        "service {name:?}: a service is a map of keys, not {}",
                        service.kind()
                    )));
                }
            }
        }
        Some(other) => {
            return Err(not_compose(format!(
                "`services` is {}; expected a map of services",
                other.kind()
            )));
        }
        None => return Err(not_compose("there is no `services` key".to_owned())),
    }
    Ok(ComposeFile {
        path: path.to_owned(),
        document,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(text: &str) -> String {
        parse(Path::new("app/docker-compose.yml"), text)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn malformed_yaml_is_refused_at_its_line_and_column() {
        let message = refusal("services:\n  web:\n    image: [busybox\n");
        assert!(message.starts_with("app/docker-compose.yml:"), "{message}");
        assert!(
            !message.contains(" at line "),
            "the position is said once: {message}"
        );
        let position: Vec<&str> = message.splitn(4, ':').collect();
        assert!(position[1].parse::<u64>().unwrap() >= 3, "{message}");
        assert!(position[2].parse::<u64>().is_ok(), "{message}");
    }

    #[test]
    fn a_service_given_twice_is_named() {
        assert_eq!(
            refusal("services:\n  web: {}\n  web: {}\n"),
            "app/docker-compose.yml:3:3: \"web\" is given twice in one map (the second time here)"
        );
    }

    #[test]
    fn a_file_without_services_is_refused() {
        assert_eq!(
            refusal("volumes: {}\n"),
            "app/docker-compose.yml: there is no `services` key"
        );
        assert_eq!(
            refusal("- web\n"),
            "app/docker-compose.yml: a compose file is a map with a `services` key, not a list"
        );
        assert_eq!(
            refusal("services:\n  web: busybox\n"),
            "app/docker-compose.yml: service \"web\": a service is a map of keys, not a string"
        );
    }
}
