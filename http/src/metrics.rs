//! `GET /metrics` in the Prometheus text format: items by queue and phase (from the backend's
//! counters), delivery outcomes and attempt durations (from the delivery loop), HTTP
//! requests by route and status (counted by a middleware), and the backend's own gauges
//! ([`Backend::gauges`]: PostgreSQL's pool and oldest snapshot, for example).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use hookspool::Backend;

use crate::{ApiError, ApiState};

/// HTTP requests counted by (method, route, status).
#[derive(Debug, Default)]
pub(crate) struct HttpMetrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
}

/// Counts every request by method, matched route (not the raw path, so ids do not explode
/// the label set) and status.
pub(crate) async fn track<B: Backend>(
    State(state): State<ApiState<B>>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let mut requests = state
        .metrics
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *requests.entry((method, route, status)).or_insert(0) += 1;
    resp
}

/// The metrics page.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "metrics",
    description = "Items by queue and phase, delivery outcomes and attempt durations, HTTP \
                   requests by method, route and status, and the storage backend's own gauges \
                   (PostgreSQL: its connections and the age of the oldest snapshot), in the \
                   Prometheus text format. Public unless the server is configured otherwise \
                   (then it needs the bearer token).",
    responses((status = 200, description = "Prometheus text.", body = String, content_type = "text/plain; version=0.0.4"))
)]
pub(crate) async fn metrics<B: Backend>(
    State(state): State<ApiState<B>>,
) -> Result<Response, ApiError> {
    let mut out = String::new();
    out.push_str("# HELP hookspool_items Items by queue and phase.\n");
    out.push_str("# TYPE hookspool_items gauge\n");
    for q in state.store.queues().await? {
        let counts = state.store.counts(&q.id).await?;
        for (phase, n) in &counts.0 {
            let _ = writeln!(
                out,
                "hookspool_items{{queue=\"{}\",phase=\"{phase}\"}} {n}",
                q.id
            );
        }
    }
    out.push_str(
        "# HELP hookspool_pruned_total Items the retention pass removed since the process \
         started, by queue and phase.\n# TYPE hookspool_pruned_total counter\n",
    );
    for (queue, phases) in state.store.pruned_all() {
        for (phase, n) in phases {
            let _ = writeln!(
                out,
                "hookspool_pruned_total{{queue=\"{queue}\",phase=\"{phase}\"}} {n}"
            );
        }
    }
    let delivery = state.hooks.delivery_stats();
    out.push_str(
        "# HELP hookspool_delivery_outcomes_total Delivery attempt outcomes since the process \
         started.\n# TYPE hookspool_delivery_outcomes_total counter\n",
    );
    for (kind, n) in &delivery.outcomes {
        let _ = writeln!(
            out,
            "hookspool_delivery_outcomes_total{{outcome=\"{kind}\"}} {n}"
        );
    }
    out.push_str(
        "# HELP hookspool_callback_outcomes_total Inbound callback handler outcomes since the \
         process started.\n# TYPE hookspool_callback_outcomes_total counter\n",
    );
    for (kind, n) in state.hooks.callback_stats() {
        let _ = writeln!(
            out,
            "hookspool_callback_outcomes_total{{outcome=\"{kind}\"}} {n}"
        );
    }
    out.push_str(
        "# HELP hookspool_delivery_attempt_duration_seconds Duration of delivery requests.\n\
         # TYPE hookspool_delivery_attempt_duration_seconds histogram\n",
    );
    for (le, n) in &delivery.buckets {
        let _ = writeln!(
            out,
            "hookspool_delivery_attempt_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "hookspool_delivery_attempt_duration_seconds_bucket{{le=\"+Inf\"}} {}\n\
         hookspool_delivery_attempt_duration_seconds_sum {}\n\
         hookspool_delivery_attempt_duration_seconds_count {}",
        delivery.count,
        delivery.sum.as_secs_f64(),
        delivery.count
    );
    out.push_str(
        "# HELP hookspool_http_requests_total HTTP requests by method, route and status.\n\
         # TYPE hookspool_http_requests_total counter\n",
    );
    let requests = state
        .metrics
        .requests
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for ((method, route, status), n) in &requests {
        let route = label_value(route);
        let _ = writeln!(
            out,
            "hookspool_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    backend_gauges(&mut out, &state.store.backend().gauges());
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response())
}

/// The backend's own gauges ([`Backend::gauges`]), each name's help and type once.
/// Samples of one name stay together, as the text format wants, in the backend's order. A
/// gauge whose name or a label name the format cannot carry is left out (and logged), so
/// that one backend's mistake cannot make the whole page unreadable.
fn backend_gauges(out: &mut String, gauges: &[hookspool::Gauge]) {
    let mut gauges: Vec<&hookspool::Gauge> = gauges
        .iter()
        .filter(|g| {
            let ok = metric_name(g.name) && g.labels.iter().all(|(k, _)| metric_name(k));
            if !ok {
                tracing::warn!(
                    name = g.name,
                    "a backend gauge with a name /metrics cannot show was left out"
                );
            }
            ok
        })
        .collect();
    gauges.sort_by_key(|g| g.name);
    let mut described = std::collections::BTreeSet::new();
    for g in gauges {
        if described.insert(g.name) {
            let help = g.help.replace('\\', "\\\\").replace('\n', "\\n");
            let _ = writeln!(out, "# HELP {} {help}\n# TYPE {} gauge", g.name, g.name);
        }
        let labels: Vec<String> = g
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label_value(v)))
            .collect();
        let value = sample_value(g.value);
        if labels.is_empty() {
            let _ = writeln!(out, "{} {value}", g.name);
        } else {
            let _ = writeln!(out, "{}{{{}}} {value}", g.name, labels.join(","));
        }
    }
}

/// Whether `name` is a metric or label name of the text format: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A sample value as the text format writes it (`+Inf`, `-Inf` and `NaN` spelled its way).
fn sample_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        v.to_string()
    }
}

/// A label value as the text format writes it: backslash, double quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use hookspool::Gauge;

    use super::backend_gauges;

    #[test]
    fn gauges_of_one_name_are_described_once_and_kept_together_with_labels_escaped() {
        let gauges = [
            Gauge::new("hookspool_x_b", "B things.", 2.0).label("state", "open"),
            Gauge::new("hookspool_x_a", "A things.", 0.5),
            Gauge::new("hookspool_x_b", "B things.", 1.0).label("state", "say \"hi\"\n\\"),
        ];
        let mut out = String::new();
        backend_gauges(&mut out, &gauges);
        assert_eq!(
            out,
            "# HELP hookspool_x_a A things.\n# TYPE hookspool_x_a gauge\nhookspool_x_a 0.5\n\
             # HELP hookspool_x_b B things.\n# TYPE hookspool_x_b gauge\n\
             hookspool_x_b{state=\"open\"} 2\n\
             hookspool_x_b{state=\"say \\\"hi\\\"\\n\\\\\"} 1\n"
        );
        let mut none = String::new();
        backend_gauges(&mut none, &[]);
        assert!(none.is_empty());
    }

    #[test]
    fn a_gauge_the_format_cannot_carry_is_left_out_and_odd_values_are_spelled_its_way() {
        let gauges = [
            Gauge::new("bad name", "Left out.", 1.0),
            Gauge::new("hookspool_x_c", "Left out: a bad label name.", 1.0).label("bad-label", "v"),
            Gauge::new("9starts_with_a_digit", "Left out.", 1.0),
            Gauge::new("hookspool_x_d", "Two\nlines \\ here.", f64::INFINITY),
            Gauge::new("hookspool_x_e", "Negative.", f64::NEG_INFINITY),
            Gauge::new("hookspool_x_f", "Not a number.", f64::NAN),
        ];
        let mut out = String::new();
        backend_gauges(&mut out, &gauges);
        assert_eq!(
            out,
            "# HELP hookspool_x_d Two\\nlines \\\\ here.\n# TYPE hookspool_x_d gauge\n\
             hookspool_x_d +Inf\n\
             # HELP hookspool_x_e Negative.\n# TYPE hookspool_x_e gauge\nhookspool_x_e -Inf\n\
             # HELP hookspool_x_f Not a number.\n# TYPE hookspool_x_f gauge\nhookspool_x_f NaN\n"
        );
    }
}
