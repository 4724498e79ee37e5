//! Reading counters from the nodes' Prometheus endpoints (`GET /metrics`), for what only
//! the server knows, such as how many clients it evicted as slow consumers.
//!
//! Best effort: a node that does not answer (killed, metrics on another listener) makes the
//! sum `None` rather than failing the run.

use std::time::Duration;

/// The nodes' counter of clients evicted as slow consumers (close 4008).
pub const EVICTIONS: &str = "pushwire_slow_consumer_evictions_total";
/// The nodes' counter of limits that tripped, labelled by `kind`.
pub const LIMIT_TRIPS: &str = "pushwire_limit_trips_total";

/// `http://HOST:PORT/metrics` for each `ws://HOST:PORT/...` URL.
pub fn metrics_urls(ws_urls: &[String]) -> Vec<String> {
    ws_urls
        .iter()
        .filter_map(|url| {
            let rest = url.strip_prefix("ws://")?;
            let authority = rest.split('/').next().unwrap_or(rest);
            Some(format!("http://{authority}/metrics"))
        })
        .collect()
}

/// The sum over every endpoint of the samples of `name` whose labels contain `labels`
/// (e.g. `kind="write_timeout"`; empty matches all). `None` if any endpoint failed.
pub async fn sum(http: &reqwest::Client, urls: &[String], name: &str, labels: &str) -> Option<f64> {
    let mut total = 0.0;
    for url in urls {
        let response = http
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        total += samples(&response.text().await.ok()?, name, labels);
    }
    Some(total)
}

/// The sum of the samples of `name` (exactly that name, not a longer one) whose label set
/// contains `labels`, in Prometheus text format.
pub fn samples(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_set, value) = match rest.strip_prefix('{') {
                Some(inner) => inner.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            if !label_set.contains(labels) {
                return None;
            }
            value.split_whitespace().next()?.parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
# HELP pushwire_slow_consumer_evictions_total Clients closed with 4008.
# TYPE pushwire_slow_consumer_evictions_total counter
pushwire_slow_consumer_evictions_total 12
pushwire_slow_consumer_evictions_total_other 99
pushwire_limit_trips_total{kind=\"queue_overflow\"} 12
pushwire_limit_trips_total{kind=\"write_timeout\"} 3
";

    #[test]
    fn samples_match_the_exact_name_and_labels() {
        assert_eq!(
            samples(TEXT, "pushwire_slow_consumer_evictions_total", ""),
            12.0
        );
        assert_eq!(
            samples(TEXT, "pushwire_limit_trips_total", "kind=\"write_timeout\""),
            3.0
        );
        assert_eq!(samples(TEXT, "pushwire_limit_trips_total", ""), 15.0);
        assert_eq!(samples(TEXT, "pushwire_missing", ""), 0.0);
    }

    #[test]
    fn metrics_urls_follow_the_websocket_urls() {
        let urls = metrics_urls(&["ws://127.0.0.1:8091/ws".into(), "wss://x/ws".into()]);
        assert_eq!(urls, ["http://127.0.0.1:8091/metrics"]);
    }
}
