//! What the streamer configures: the homeserver, the account, how stream rooms are named.

use serde::{Deserialize, Serialize};

use crate::Error;

/// OnAir's own alias scheme: `#onair_<stream>:<server>`.
pub const DEFAULT_ALIAS_TEMPLATE: &str = "#onair_{stream}:{server}";
/// The Cactus Comments scheme, `#comments_<site>_<section>:<server>` with the stream as the
/// section, so an existing Cactus setup keeps its rooms and history.
pub const CACTUS_ALIAS_TEMPLATE: &str = "#comments_{site}_{stream}:{server}";

/// The Matrix side of OnAir. The password is never part of it: it is used once, at login, and the
/// session it yields lives in the secret store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatrixConfig {
    /// `https://matrix.example.org`, or a bare server name (`example.org`) resolved through
    /// `.well-known`.
    pub homeserver: String,
    /// `@me:example.org` or just `me`.
    pub user: String,
    /// The room alias of a stream. Placeholders: `{stream}`, `{server}` (the server name of the
    /// logged-in user), `{site}`. See [`DEFAULT_ALIAS_TEMPLATE`] and [`CACTUS_ALIAS_TEMPLATE`].
    pub alias_template: String,
    /// `{site}` in the alias template: the Cactus Comments site name.
    pub site: Option<String>,
    /// Post a notice when a stream goes live and when it ends.
    pub notify_live: bool,
    /// Make those notices mention `@room` (notifies every member).
    pub mention_room: bool,
}

impl Default for MatrixConfig {
    fn default() -> Self {
        Self {
            homeserver: String::new(),
            user: String::new(),
            alias_template: DEFAULT_ALIAS_TEMPLATE.into(),
            site: None,
            notify_live: true,
            mention_room: false,
        }
    }
}

impl MatrixConfig {
    /// OnAir's own room scheme.
    pub fn new(homeserver: impl Into<String>, user: impl Into<String>) -> Self {
        Self { homeserver: homeserver.into(), user: user.into(), ..Self::default() }
    }

    /// The Cactus Comments preset: rooms `#comments_<site>_<stream>:<server>`.
    pub fn cactus(homeserver: impl Into<String>, user: impl Into<String>, site: impl Into<String>) -> Self {
        Self { alias_template: CACTUS_ALIAS_TEMPLATE.into(), site: Some(site.into()), ..Self::new(homeserver, user) }
    }

    /// The alias of `stream`'s room on `server` (the user's server name).
    pub fn alias_for(&self, stream: &str, server: &str) -> Result<String, Error> {
        let template =
            if self.alias_template.trim().is_empty() { DEFAULT_ALIAS_TEMPLATE } else { &self.alias_template };
        if stream.is_empty() || stream.contains(':') {
            return Err(Error::Config(format!("stream name {stream:?} cannot be part of a room alias")));
        }
        let mut alias = template.replace("{stream}", stream).replace("{server}", server);
        if alias.contains("{site}") {
            let site =
                self.site.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
                    Error::Config(format!("the alias template {template:?} needs a site name (`site`)"))
                })?;
            if site.contains(':') {
                return Err(Error::Config(format!("site name {site:?} cannot be part of a room alias")));
            }
            alias = alias.replace("{site}", site);
        }
        let valid = alias.starts_with('#')
            && alias.len() <= 255
            && alias[1..].split_once(':').is_some_and(|(local, srv)| !local.is_empty() && !srv.is_empty())
            && !alias.contains(char::is_whitespace)
            && !alias.contains(['{', '}']);
        if !valid {
            return Err(Error::Config(format!(
                "the alias template {template:?} gives {alias:?}, which is not a room alias (#name:server)"
            )));
        }
        Ok(alias)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_alias() {
        let c = MatrixConfig::new("https://m.example", "me");
        assert_eq!(c.alias_for("stream", "example.org").unwrap(), "#onair_stream:example.org");
    }

    #[test]
    fn cactus_preset_alias() {
        let c = MatrixConfig::cactus("https://m.example", "me", "myblog");
        assert_eq!(c.alias_for("talk-1", "example.org").unwrap(), "#comments_myblog_talk-1:example.org");
    }

    #[test]
    fn site_is_required_by_cactus_template() {
        let mut c = MatrixConfig::cactus("h", "u", "");
        assert!(matches!(c.alias_for("s", "x"), Err(Error::Config(_))));
        c.site = None;
        assert!(c.alias_for("s", "x").unwrap_err().to_string().contains("site"));
    }

    #[test]
    fn bad_templates_and_names_are_refused() {
        let mut c = MatrixConfig::new("h", "u");
        assert!(c.alias_for("a:b", "x").is_err());
        assert!(c.alias_for("", "x").is_err());
        c.alias_template = "onair_{stream}".into();
        assert!(c.alias_for("s", "x").is_err());
        c.alias_template = "#{stream}_{unknown}:{server}".into();
        assert!(c.alias_for("s", "x").is_err());
        c.alias_template = "#live_{stream}:other.example".into();
        assert_eq!(c.alias_for("s", "x").unwrap(), "#live_s:other.example");
        c.alias_template = String::new();
        assert_eq!(c.alias_for("s", "x").unwrap(), "#onair_s:x");
    }

    #[test]
    fn config_reads_from_toml_like_maps_with_defaults() {
        let c: MatrixConfig =
            serde_json::from_str(r#"{"homeserver":"https://m.example","user":"@me:m.example"}"#).unwrap();
        assert_eq!(c.alias_template, DEFAULT_ALIAS_TEMPLATE);
        assert!(c.notify_live);
        assert!(!c.mention_room);
    }
}
