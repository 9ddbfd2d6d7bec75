//! The layer that puts a breaker in front of an endpoint's service.

use std::sync::Arc;

use tower::Layer;

use super::CircuitBreaker;
use super::config::BreakerConfig;

/// Wraps a service in a [`CircuitBreaker`].
///
/// Each [`layer`](Layer::layer) call makes a breaker with its own state, so apply the layer once
/// per endpoint; clones of the resulting breaker share that state.
#[derive(Clone, Debug, Default)]
pub struct CircuitBreakerLayer {
    config: BreakerConfig,
    name: Option<Arc<str>>,
}

impl CircuitBreakerLayer {
    /// A layer making breakers with `config`.
    pub fn new(config: BreakerConfig) -> CircuitBreakerLayer {
        CircuitBreakerLayer { config, name: None }
    }

    /// Names the endpoint in the breaker's errors, e.g. its address.
    pub fn with_name(mut self, name: impl Into<Arc<str>>) -> CircuitBreakerLayer {
        self.name = Some(name.into());
        self
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> CircuitBreaker<S> {
        let breaker = CircuitBreaker::new(inner, self.config.clone());
        match &self.name {
            Some(name) => breaker.with_name(Arc::clone(name)),
            None => breaker,
        }
    }
}
