//! Properties of the exposition under arbitrary input: whatever names the configuration
//! holds and whatever status codes upstreams send, every line stays valid text-format
//! syntax and the number of series stays bounded.

mod metrics_support;

use std::sync::LazyLock;

use proptest::prelude::*;
use regex::Regex;
use sluice_proxy::metrics::{Metrics, STATUS_CODES};
use sluice_proxy::record::{ResponseSource, RouteRef};

use metrics_support::{config, orders_request, snapshot};

/// One sample line of the text format: a metric name, optional `{label="value",...}` with
/// only the three legal escapes inside values, a space and a number.
static SAMPLE: LazyLock<Regex> = LazyLock::new(|| {
    let value = r#""(?:[^"\\\n]|\\\\|\\"|\\n)*""#;
    let label = format!(r"[a-zA-Z_][a-zA-Z0-9_]*={value}");
    Regex::new(&format!(
        r"^[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{{{label}(?:,{label})*\}})? (?:[-+]?[0-9.eE+-]+|NaN|[+-]Inf)$"
    ))
    .expect("sample regex")
});

fn check_syntax(text: &str) {
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(SAMPLE.is_match(line), "not a valid sample line: {line:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_names_and_codes_encode_to_valid_bounded_text(
        route_name in "\\PC{0,24}|[\"\\\\\n]{1,6}",
        service_name in "\\PC{0,24}",
        statuses in proptest::collection::vec(any::<u16>(), 1..40),
    ) {
        let mut config = config();
        if let Some(route) = config.routes.first_mut() {
            route.name = Some(route_name.clone());
        }
        if let Some(service) = config.services.first_mut() {
            service.name = Some(service_name.clone());
        }
        let metrics = Metrics::with_node_id("n");
        metrics.on_config(&config);
        for (i, status) in statuses.iter().enumerate() {
            let mut rec = orders_request(*status);
            rec.route = Some(RouteRef { index: 0, label: route_name.as_str().into() });
            if i % 2 == 1 {
                rec.source = ResponseSource::Gateway;
            }
            metrics.on_request(&rec);
        }
        let text = metrics.encode(&[snapshot()]);
        check_syntax(&text);

        // Every request is counted once, whatever its status.
        let counted: u64 = text
            .lines()
            .filter(|l| l.starts_with("kong_http_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        prop_assert_eq!(counted, statuses.len() as u64);
        // At most one series per listed code plus `other`, per source.
        let series = text.lines().filter(|l| l.starts_with("kong_http_requests_total{")).count();
        prop_assert!(series <= 2 * (STATUS_CODES.len() + 1));
    }
}
