//! Fault injection, so clients can be tested against a misbehaving API:
//! added latency, 500/503 responses, and connections dropped after the
//! request was processed (the write happened, the response is lost).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tower::Service;
use warp::Reply as _;

/// Faults to inject; the default injects none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// Added to every request before it is handled.
    pub latency: Duration,
    /// Share of requests (0.0 to 1.0) that get a 500 or 503 response without being processed.
    pub error_rate: f64,
    /// Share of requests (0.0 to 1.0) whose connection is closed after the
    /// request was processed, so the client sees a reset instead of a response.
    pub drop_rate: f64,
    /// Seed of the fault sequence, for repeatable tests; random when `None`.
    pub seed: Option<u64>,
}

impl FaultConfig {
    pub fn is_active(&self) -> bool {
        !self.latency.is_zero() || self.error_rate > 0.0 || self.drop_rate > 0.0
    }

    /// Checks that the rates are shares between 0 and 1.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [("--error-rate", self.error_rate), ("--drop-rate", self.drop_rate)] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} {rate} is out of range; use a share between 0.0 and 1.0"));
            }
        }
        Ok(())
    }
}

/// The fault applied to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    Error(StatusCode),
    Drop,
}

/// Draws faults from one seeded sequence shared by all connections.
#[derive(Debug, Clone)]
pub struct FaultInjector {
    config: FaultConfig,
    rng: Arc<Mutex<StdRng>>,
}

impl FaultInjector {
    pub fn new(config: FaultConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Self { config, rng: Arc::new(Mutex::new(rng)) }
    }

    fn draw(&self) -> Fault {
        if self.config.error_rate <= 0.0 && self.config.drop_rate <= 0.0 {
            return Fault::None;
        }
        let Ok(mut rng) = self.rng.lock() else {
            return Fault::None;
        };
        let roll: f64 = rng.random();
        if roll < self.config.error_rate {
            let status =
                if rng.random_bool(0.5) { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::SERVICE_UNAVAILABLE };
            Fault::Error(status)
        } else if roll < self.config.error_rate + self.config.drop_rate {
            Fault::Drop
        } else {
            Fault::None
        }
    }

    /// Wraps the API service so each request may be delayed, failed or dropped.
    pub fn wrap<S>(
        self,
        inner: S,
    ) -> impl Service<Request<Incoming>, Response = warp::reply::Response, Error = InjectedDrop, Future: Send> + Clone + Send
    where
        S: Service<Request<Incoming>, Response = warp::reply::Response, Error = Infallible> + Clone + Send + 'static,
        S::Future: Send,
    {
        let injector = self;
        tower::service_fn(move |request: Request<Incoming>| {
            let mut inner = inner.clone();
            let injector = injector.clone();
            async move {
                if !injector.config.latency.is_zero() {
                    tokio::time::sleep(injector.config.latency).await;
                }
                let fault = injector.draw();
                if let Fault::Error(status) = fault {
                    tracing::debug!(path = %request.uri().path(), status = status.as_u16(), "injecting an error response");
                    let body =
                        serde_json::json!({"detail": "Injected fault: the mock was asked to fail this request."});
                    return Ok(warp::reply::with_status(warp::reply::json(&body), status).into_response());
                }
                let response = match inner.call(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                if fault == Fault::Drop {
                    tracing::debug!("injecting a dropped connection after processing");
                    return Err(InjectedDrop);
                }
                Ok::<_, InjectedDrop>(response)
            }
        })
    }
}

/// The error that makes hyper close a connection without a response.
#[derive(Debug)]
pub struct InjectedDrop;

impl std::fmt::Display for InjectedDrop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for InjectedDrop {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_outside_unit_interval_are_invalid() {
        let config = FaultConfig { error_rate: 1.5, ..FaultConfig::default() };
        assert!(config.validate().is_err());
        assert!(FaultConfig::default().validate().is_ok());
    }

    #[test]
    fn seeded_draws_repeat() {
        let config = FaultConfig { error_rate: 0.3, drop_rate: 0.3, seed: Some(7), ..FaultConfig::default() };
        let first: Vec<Fault> = (0..20)
            .map({
                let injector = FaultInjector::new(config.clone());
                move |_| injector.draw()
            })
            .collect();
        let injector = FaultInjector::new(config);
        let second: Vec<Fault> = (0..20).map(|_| injector.draw()).collect();
        assert_eq!(first, second);
        assert!(first.contains(&Fault::Drop));
        assert!(first.iter().any(|fault| matches!(fault, Fault::Error(_))));
    }

    #[test]
    fn no_faults_by_default() {
        let injector = FaultInjector::new(FaultConfig::default());
        assert!((0..100).all(|_| injector.draw() == Fault::None));
    }
}
