//! Reading the API's own configuration files (`--api-keys-file`, `--plan`): TOML, or JSON when the
//! name ends in `.json`. Parsing and validation are pure ([`parse`]); only [`read`] does IO.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The file could not be read.
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML/JSON of the expected shape.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field.
        message: String,
    },
    /// A value is unusable.
    #[error("{}: {field}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, e.g. `keys[2].role`.
        field: String,
        /// What is wrong, quoting the value.
        message: String,
    },
}

/// The file format, from the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `*.json`
    Json,
    /// Anything else.
    Toml,
}

impl Format {
    /// JSON for `*.json`, else TOML.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => Self::Json,
            _ => Self::Toml,
        }
    }
}

/// Parses `text` as `format`.
pub(super) fn parse<T: DeserializeOwned>(
    path: &Path,
    text: &str,
    format: Format,
) -> Result<T, SettingsError> {
    let parsed = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| e.to_string()),
        Format::Toml => toml::from_str(text).map_err(|e| e.to_string()),
    };
    parsed.map_err(|message| SettingsError::Parse {
        path: path.to_owned(),
        message: message.trim().replace('\n', " "),
    })
}

/// Reads and parses `path`.
pub(super) fn read<T: DeserializeOwned>(path: &Path) -> Result<T, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text, Format::of(path))
}
