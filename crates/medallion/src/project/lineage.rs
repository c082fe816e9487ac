//! `[lineage]` validated: where OpenLineage events go (`observability::lineage` sends them).

use std::path::{Path, PathBuf};

use crate::spec::{Diagnostic, Duration, LineageSpec, Located};

/// Default endpoint under the backend's URL.
pub const DEFAULT_ENDPOINT: &str = "api/v1/lineage";

/// Where events go, as configured in `[lineage]` (or by the standard `OPENLINEAGE_*` variables).
#[derive(Debug, Clone, PartialEq)]
pub struct LineageConfig {
    /// Job namespace (None: `$OPENLINEAGE_NAMESPACE`, else the project name).
    pub namespace: Option<String>,
    /// JSON Lines file (absolute).
    pub file: Option<PathBuf>,
    /// Backend URL.
    pub url: Option<String>,
    /// Path under `url`.
    pub endpoint: String,
    /// Bearer token, `${VAR}` references not yet expanded.
    pub api_key: Option<String>,
    /// Per-request timeout.
    pub timeout: std::time::Duration,
}

impl LineageConfig {
    /// Validates `[lineage]` of the project at `root`.
    pub fn from_spec(spec: &Located<LineageSpec>, root: &Path) -> std::result::Result<LineageConfig, Vec<Diagnostic>> {
        let s = &spec.spec;
        let diag = |message: String| Diagnostic::new(&spec.file, "[lineage]", message).with_line(spec.line);
        let mut diags = Vec::new();
        if s.file.is_none() && s.url.is_none() {
            diags.push(diag("needs `file` (a JSON Lines file) or `url` (an OpenLineage backend), or both".into()));
        }
        if let Some(url) = &s.url {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(u) => diags.push(diag(format!("url `{url}`: scheme `{}` is not http or https", u.scheme()))),
                Err(e) => diags.push(diag(format!("url `{url}`: {e}"))),
            }
        }
        if let Some(key) = &s.api_key
            && let Err(e) = crate::spec::env::check(key)
        {
            diags.push(diag(format!("api_key: {e}")));
        }
        let timeout = match s.timeout.as_deref().map(str::parse::<Duration>).transpose() {
            Ok(t) => t.map_or(std::time::Duration::from_secs(5), |d| std::time::Duration::from_secs(d.seconds)),
            Err(e) => {
                diags.push(diag(format!("timeout: {e}")));
                std::time::Duration::ZERO
            }
        };
        if !diags.is_empty() {
            return Err(diags);
        }
        Ok(LineageConfig {
            namespace: s.namespace.clone(),
            file: s.file.as_ref().map(|f| root.join(f)),
            url: s.url.clone(),
            endpoint: s.endpoint.clone().unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            api_key: s.api_key.clone(),
            timeout,
        })
    }

    /// The configuration in effect: the project's, else one made from `OPENLINEAGE_URL` (and
    /// `OPENLINEAGE_ENDPOINT`, `OPENLINEAGE_API_KEY`) as other OpenLineage clients read them;
    /// none when `OPENLINEAGE_DISABLED=true`. `OPENLINEAGE_NAMESPACE` fills a namespace the
    /// project does not set.
    pub fn resolve(configured: Option<&LineageConfig>, env: impl Fn(&str) -> Option<String>) -> Option<LineageConfig> {
        if env("OPENLINEAGE_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return None;
        }
        if let Some(c) = configured {
            let namespace = c.namespace.clone().or_else(|| env("OPENLINEAGE_NAMESPACE"));
            return Some(LineageConfig { namespace, ..c.clone() });
        }
        let url = env("OPENLINEAGE_URL").filter(|u| !u.is_empty())?;
        Some(LineageConfig {
            namespace: env("OPENLINEAGE_NAMESPACE"),
            file: None,
            url: Some(url),
            endpoint: env("OPENLINEAGE_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            api_key: env("OPENLINEAGE_API_KEY").map(|k| k.replace('$', "$$")),
            timeout: std::time::Duration::from_secs(5),
        })
    }
}
