//! [`RawSettings`]: the `serve` settings as given, still text. Flags and
//! `CHUNKBUS_*` environment variables come through clap, built from the
//! setting definitions ([`super::settings::ALL`]); [`RawSettings::merge_file`]
//! fills what they left unset from the `--config` TOML file, refusing keys
//! that are not settings. Parsing the text is `super::validate`'s job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};

use super::settings::{self, Setting, ALL};
use super::ConfigError;

/// Id of the `--config` argument (not a setting: it names the file).
const CONFIG_ARG: &str = "config";

/// Raw `serve` settings: the config file path and every setting that was
/// given on the command line, in the environment or in the file, as text.
/// `Debug` shows secret settings (`Setting::secret`) as `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawSettings {
    /// TOML config file (`--config`, `CHUNKBUS_CONFIG`).
    pub config: Option<PathBuf>,
    values: BTreeMap<&'static str, String>,
}

impl std::fmt::Debug for RawSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let values = self.values.iter().map(|(key, v)| {
            let secret = settings::by_key(key).is_none_or(|s| s.secret);
            (*key, if secret { "<redacted>" } else { v.as_str() })
        });
        f.debug_struct("RawSettings")
            .field("config", &self.config)
            .field("values", &values.collect::<BTreeMap<_, _>>())
            .finish()
    }
}

impl RawSettings {
    /// The value given for `setting`, if any.
    #[must_use]
    pub fn get(&self, setting: &Setting) -> Option<&str> {
        self.values.get(setting.key).map(String::as_str)
    }

    /// Sets `setting` as if given on the command line.
    #[must_use]
    pub fn with(mut self, setting: &'static Setting, value: impl Into<String>) -> Self {
        self.values.insert(setting.key, value.into());
        self
    }

    /// The same settings with `file` as the config file.
    #[must_use]
    pub fn with_config_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.config = Some(file.into());
        self
    }

    /// The settings whose given value differs between `self` and `other`.
    pub fn changed<'a>(&'a self, other: &'a Self) -> impl Iterator<Item = &'static Setting> + 'a {
        ALL.iter()
            .copied()
            .filter(move |s| self.get(s) != other.get(s))
    }

    /// Fills unset settings from the `--config` TOML file, if one was given.
    ///
    /// # Errors
    /// The file is unreadable, not TOML, or has unknown keys or bad types.
    pub fn merge_file(mut self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::File {
                path: path.clone(),
                why: e.to_string().replace('\n', " "),
            })?;
        for (key, value) in table {
            let Some(setting) = settings::by_key(&key) else {
                let known: Vec<&str> = ALL.iter().map(|s| s.key).collect();
                return Err(ConfigError::File {
                    path,
                    why: format!(
                        "unknown setting {key:?}; known settings: {}",
                        known.join(", ")
                    ),
                });
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::File {
                        path,
                        why: format!(
                            "setting {key:?} must be a string, integer or boolean, not {}",
                            other.type_str()
                        ),
                    })
                }
            };
            // Flags and environment win over the file.
            self.values.entry(setting.key).or_insert(text);
        }
        Ok(self)
    }
}

/// The clap argument of one setting.
fn arg(s: &'static Setting) -> Arg {
    let mut a = Arg::new(s.key)
        .long(s.flag())
        .env(s.env())
        .value_name(s.value_name)
        .help(s.help_text())
        .help_heading(heading(s.section))
        .action(ArgAction::Set)
        .hide_env_values(s.secret);
    if s.switch {
        a = a.num_args(0..=1).default_missing_value("true");
    }
    a
}

/// `--help` heading of a section.
fn heading(section: &str) -> String {
    let mut h = section.to_owned();
    if let Some(first) = h.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    h
}

impl Args for RawSettings {
    fn augment_args(cmd: Command) -> Command {
        let config = Arg::new(CONFIG_ARG)
            .long("config")
            .env("CHUNKBUS_CONFIG")
            .value_name("FILE")
            .action(ArgAction::Set)
            .help("TOML config file; keys are the flag names with _ for - (precedence: flag > CHUNKBUS_<KEY> environment > file > default).");
        cmd.arg(config).args(ALL.iter().copied().map(arg))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for RawSettings {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut raw = Self {
            config: m.get_one::<String>(CONFIG_ARG).map(PathBuf::from),
            values: BTreeMap::new(),
        };
        for s in ALL {
            if let Some(v) = m.get_one::<String>(s.key) {
                raw.values.insert(s.key, v.clone());
            }
        }
        Ok(raw)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::{MAX_CHUNK_SIZE, NAME};

    fn parse(args: &[&str]) -> Result<RawSettings, clap::Error> {
        let cmd = RawSettings::augment_args(Command::new("serve"));
        RawSettings::from_arg_matches(&cmd.try_get_matches_from(args)?)
    }

    #[test]
    fn every_setting_is_a_flag() {
        for s in ALL {
            let value = s.example;
            let raw = parse(&["serve", &format!("--{}", s.flag()), value]).unwrap();
            assert_eq!(raw.get(s), Some(value), "{}", s.key);
        }
        let raw = parse(&["serve", "--fsync-every-write"]).unwrap();
        assert_eq!(raw.get(&settings::FSYNC_EVERY_WRITE), Some("true"));
        assert!(parse(&["serve", "--max-chunk-sise", "1"]).is_err());
    }

    #[test]
    fn help_shows_defaults_and_hides_secrets() {
        let mut cmd = RawSettings::augment_args(Command::new("serve"));
        let help = cmd.render_long_help().to_string();
        assert!(help.contains("--max-chunk-size"), "{help}");
        assert!(help.contains("Default = 64MiB"), "{help}");
        assert!(help.contains("CHUNKBUS_MAX_CHUNK_SIZE"), "{help}");
        assert!(help.contains("Storage:"), "{help}");
        assert!(help.contains("Reloads live"), "{help}");
    }

    #[test]
    fn file_fills_only_unset_settings_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max_chunk_size = 1048576\nname = \"filenode\"\n").unwrap();
        let raw = RawSettings::default()
            .with(&NAME, "flagnode")
            .with_config_file(&file)
            .merge_file()
            .unwrap();
        assert_eq!(raw.get(&NAME), Some("flagnode"));
        assert_eq!(raw.get(&MAX_CHUNK_SIZE), Some("1048576"));

        std::fs::write(&file, "config = \"other.toml\"\n").unwrap();
        let err = RawSettings::default()
            .with_config_file(&file)
            .merge_file()
            .unwrap_err();
        assert!(err.to_string().contains("unknown setting"), "{err}");
        std::fs::write(&file, "peers = [\"a\"]\n").unwrap();
        let err = RawSettings::default()
            .with_config_file(&file)
            .merge_file()
            .unwrap_err();
        assert!(err.to_string().contains("must be a string"), "{err}");
    }
}
