//! The Prometheus registry of one process, and its text exposition for `GET /metrics`.

use prometheus::core::Collector;
use prometheus::{Encoder, TextEncoder};

/// The series one process exports.
#[derive(Debug, Clone, Default)]
pub struct Registry(prometheus::Registry);

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `collector`'s series; fails when one of its names is already registered.
    pub fn register(&self, collector: Box<dyn Collector>) -> prometheus::Result<()> {
        self.0.register(collector)
    }

    /// Every series in the Prometheus text format 0.0.4, families sorted by name, label values
    /// escaped as the format says (`\` as `\\`, `"` as `\"`, a line feed as `\n`).
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // The encoder fails only on a family without a name or without samples, and `gather`
        // returns neither; writing into a Vec does not fail.
        let _ = TextEncoder::new().encode(&self.0.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use prometheus::{IntCounter, IntGaugeVec, Opts};

    use super::*;

    fn text(registry: &Registry) -> String {
        String::from_utf8(registry.render()).unwrap()
    }

    #[test]
    fn renders_help_type_and_samples() {
        let registry = Registry::new();
        let served = IntCounter::new("dime_test_served_total", "Requests served.").unwrap();
        registry.register(Box::new(served.clone())).unwrap();
        served.inc_by(3);
        assert_eq!(
            text(&registry),
            "# HELP dime_test_served_total Requests served.\n\
             # TYPE dime_test_served_total counter\n\
             dime_test_served_total 3\n"
        );
    }

    #[test]
    fn label_values_are_escaped_per_the_text_format() {
        let registry = Registry::new();
        let running = IntGaugeVec::new(
            Opts::new("dime_test_running", "1 while it runs."),
            &["channel"],
        )
        .unwrap();
        registry.register(Box::new(running.clone())).unwrap();
        running.with_label_values(&["cam \"A\" \\ B\nC"]).set(1);
        assert!(
            text(&registry).contains("dime_test_running{channel=\"cam \\\"A\\\" \\\\ B\\nC\"} 1\n"),
            "{}",
            text(&registry)
        );
    }

    #[test]
    fn a_name_registered_twice_is_refused() {
        let registry = Registry::new();
        let one = || Box::new(IntCounter::new("dime_test_total", "Once.").unwrap());
        registry.register(one()).unwrap();
        assert!(registry.register(one()).is_err());
    }
}
