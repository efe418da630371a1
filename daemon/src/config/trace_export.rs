//! `[tracing]`: where the daemon exports its traces over OpenTelemetry's OTLP
//! (a build with the `otel` feature; see `crate::trace`).

use serde::Deserialize;
use toml::Spanned;

use super::Config;

/// The standard variables of OpenTelemetry's exporters, taken when the file names no endpoint.
#[cfg(feature = "otel")]
const ENDPOINT_VARS: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"];

/// OTLP export of traces; off unless an endpoint is given here or in the environment.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct TracingConfig {
    /// The collector's OTLP/HTTP address, e.g. `http://localhost:4318`; spans
    /// are posted to `<it>/v1/traces`, as with `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (which this setting overrides).
    pub(crate) otlp_endpoint: Option<Spanned<String>>,
    /// The `service.name` the spans carry.
    pub(crate) service_name: String,
    /// Spans waiting for the collector at most; more are dropped (and counted in the log).
    pub(crate) queue_size: Spanned<usize>,
    /// Seconds one export may take.
    pub(crate) timeout_secs: u64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            service_name: "nudge".into(),
            queue_size: Spanned::new(0..0, 2048),
            timeout_secs: 10,
        }
    }
}

impl Config {
    /// Refuses an endpoint that is not an http(s) URL, a queue of no room, and
    /// any endpoint at all in a build without the `otel` feature.
    pub(super) fn check_tracing(&self) -> anyhow::Result<()> {
        if *self.tracing.queue_size.get_ref() == 0 {
            return Err(self.setting_error(
                self.tracing.queue_size.span(),
                "[tracing] queue_size = 0 would drop every span".into(),
                Some("leave it out for the default, 2048".into()),
            ));
        }
        let Some(endpoint) = &self.tracing.otlp_endpoint else {
            return Ok(());
        };
        if !cfg!(feature = "otel") {
            return Err(self.setting_error(
                endpoint.span(),
                "[tracing] otlp_endpoint is set, but this nudge was built without OpenTelemetry export".into(),
                Some("build it with `cargo build --release --features otel`, or remove the setting".into()),
            ));
        }
        let url = reqwest::Url::parse(endpoint.get_ref());
        if !url.is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
            return Err(self.setting_error(
                endpoint.span(),
                format!(
                    "[tracing] otlp_endpoint = {:?} is not an http(s) address",
                    endpoint.get_ref()
                ),
                Some("give the collector's OTLP/HTTP address, e.g. \"http://localhost:4318\"".into()),
            ));
        }
        Ok(())
    }

    /// What the exporter needs, if traces are to be exported: an endpoint in
    /// the file or in the standard environment variables.
    #[cfg(feature = "otel")]
    pub(crate) fn trace_export(&self) -> Option<crate::trace::ExportSettings> {
        let endpoint = match &self.tracing.otlp_endpoint {
            Some(base) => Some(format!("{}/v1/traces", base.get_ref().trim_end_matches('/'))),
            None if ENDPOINT_VARS
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty())) =>
            {
                None
            }
            None => return None,
        };
        Some(crate::trace::ExportSettings {
            endpoint,
            service_name: self.tracing.service_name.clone(),
            queue_size: *self.tracing.queue_size.get_ref(),
            timeout: std::time::Duration::from_secs(self.tracing.timeout_secs.max(1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::load_text as load;

    #[test]
    fn bad_tracing_settings_are_named_with_their_line_and_column() {
        let err = load("[tracing]\nqueue_size = 0\n").unwrap_err().to_string();
        assert!(err.contains("nudge.toml:2:14: [tracing] queue_size = 0"), "{err}");
        let err = load("[tracing]\notlp_endpoint = \"localhost:4318\"\n")
            .unwrap_err()
            .to_string();
        if cfg!(feature = "otel") {
            assert!(
                err.contains("nudge.toml:2:17: [tracing] otlp_endpoint = \"localhost:4318\" is not an http(s) address"),
                "{err}"
            );
        } else {
            assert!(
                err.contains("nudge.toml:2:17: [tracing] otlp_endpoint is set, but this nudge was built without"),
                "{err}"
            );
            assert!(err.contains("--features otel"), "{err}");
        }
    }

    #[cfg(feature = "otel")]
    #[test]
    fn the_endpoint_is_the_collector_base_address() {
        let config =
            load("[tracing]\notlp_endpoint = \"http://collector:4318/\"\nservice_name = \"crm-nudge\"\n").unwrap();
        let export = config.trace_export().expect("an endpoint exports");
        assert_eq!(export.endpoint.as_deref(), Some("http://collector:4318/v1/traces"));
        assert_eq!(export.service_name, "crm-nudge");
        assert_eq!(export.queue_size, 2048);
    }
}
