//! `GET /-/instances` and `GET /-/health`: the target's endpoints as its [`Client`] sees them.
//!
//! [`Client`]: crate::Client

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use zrpc_core::breaker::BreakerState;

use super::Shared;
use super::status::json_headers;
use crate::channel::ChannelState;
use crate::client::EndpointStatus;

/// Every endpoint discovery gave the target, with its state:
/// `{"endpoints":[{"address":"tcp://..","weight":1,"available":true,"in_flight":0,
/// "latency_us":120,"breaker":"closed","connections":[{"state":"ready"}]}]}`.
pub(crate) async fn instances(State(shared): State<Arc<Shared>>) -> Response {
    discovered(&shared).await;
    let endpoints: Vec<Value> = shared.client.endpoint_status().iter().map(endpoint).collect();
    (StatusCode::OK, json_headers(), json!({ "endpoints": endpoints }).to_string()).into_response()
}

/// `200` with `{"status":"ok",..}` while at least one endpoint may be picked, `503` with
/// `{"status":"unavailable",..}` otherwise (none discovered yet, or all down).
pub(crate) async fn health(State(shared): State<Arc<Shared>>) -> Response {
    discovered(&shared).await;
    let endpoints = shared.client.endpoint_status();
    let available = endpoints.iter().filter(|e| e.available).count();
    let (http, word) =
        if available > 0 { (StatusCode::OK, "ok") } else { (StatusCode::SERVICE_UNAVAILABLE, "unavailable") };
    let body = json!({ "status": word, "endpoints": endpoints.len(), "available": available });
    (http, json_headers(), body.to_string()).into_response()
}

/// Starts the target's discovery if no call has yet, and waits up to [`DISCOVERY_WAIT`] for its
/// first set of endpoints: a fresh gateway would otherwise report none until its first call.
async fn discovered(shared: &Shared) {
    let _ = tokio::time::timeout(DISCOVERY_WAIT, shared.client.discovered()).await;
}

/// How long `/-/instances` and `/-/health` wait for a discovery that has not answered yet (an
/// etcd that is down) before answering with what there is.
const DISCOVERY_WAIT: Duration = Duration::from_secs(1);

fn endpoint(status: &EndpointStatus) -> Value {
    let connections: Vec<Value> = status
        .connections
        .iter()
        .map(|state| match state {
            ChannelState::Idle => json!({ "state": "idle" }),
            ChannelState::Connecting => json!({ "state": "connecting" }),
            ChannelState::Ready => json!({ "state": "ready" }),
            ChannelState::Failed { reason } => json!({ "state": "failed", "reason": reason.to_string() }),
        })
        .collect();
    let breaker = status.breaker.map(|state| match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
        _ => "unknown",
    });
    json!({
        "address": &*status.address,
        "weight": status.weight,
        "available": status.available,
        "in_flight": status.in_flight,
        "latency_us": status.latency.map(|latency| u64::try_from(latency.as_micros()).unwrap_or(u64::MAX)),
        "breaker": breaker,
        "connections": connections,
    })
}
