//! Leader election on a `coordination.k8s.io/v1` Lease, with the semantics
//! of client-go's leader election.
//!
//! A candidate takes the Lease when it is free or when its record has not
//! changed for `leaseDurationSeconds` *as observed locally*, so clock skew
//! between nodes cannot make a live holder look expired. Every write is a
//! create or an update carrying the `resourceVersion` that was read, so two
//! candidates can never both win: the loser gets 409 Conflict. A holder that
//! cannot renew within the renew deadline steps down before its Lease can
//! expire for the others.
//!
//! NOTE: kube-lease-manager offers leases too, but it judges expiry by the
//! holder's `renewTime` against the local clock, and takes the Lease with
//! server-side apply; this module keeps client-go's skew-tolerant rule.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

use super::{Action, KubeError, call, call_optional};

/// Timing of the election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a Lease stays valid without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long a holder keeps trying to renew before it steps down; shorter
    /// than the lease duration.
    pub renew_deadline: Duration,
    /// The pause between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseTiming {
    /// client-go's proportions: a 15 s lease gives a 10 s renew deadline and
    /// a 2 s retry period.
    pub fn from_lease_duration(lease_duration: Duration) -> Self {
        let lease_duration = lease_duration.max(Duration::from_secs(1));
        Self {
            lease_duration,
            renew_deadline: lease_duration.mul_f64(2.0 / 3.0),
            retry_period: lease_duration.mul_f64(2.0 / 15.0).max(Duration::from_millis(50)),
        }
    }
}

/// One candidate for leadership.
#[derive(Debug)]
pub struct LeaderElector {
    leases: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: LeaseTiming,
    /// The last Lease spec read and when it was first seen in that state.
    observed: Option<(LeaseSpec, Instant)>,
}

impl LeaderElector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: impl Into<String>,
        identity: impl Into<String>,
        timing: LeaseTiming,
    ) -> Self {
        Self {
            leases: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.into(),
            identity: identity.into(),
            timing,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn action(&self, verb: &'static str) -> Action {
        Action::namespaced(verb, "coordination.k8s.io", "leases", &self.namespace, Some(&self.name))
    }

    /// Tries once to acquire or renew. `Ok(true)` means this candidate
    /// holds the Lease now; `Ok(false)` that another live holder has it or
    /// another candidate won the race.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, KubeError> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.timing.lease_duration.as_secs()).unwrap_or(i32::MAX).max(1);
        let Some(lease) = call_optional(self.action("get"), self.leases.get(&self.name)).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match call(self.action("create"), self.leases.create(&PostParams::default(), &lease)).await {
                Ok(created) => {
                    self.observe(created.spec.unwrap_or_default());
                    Ok(true)
                }
                Err(error) if error.is_already_exists() => Ok(false),
                Err(error) => Err(error),
            };
        };

        let spec = lease.spec.clone().unwrap_or_default();
        self.observe(spec.clone());
        let holder = spec.holder_identity.clone().filter(|holder| !holder.is_empty());
        let held_by_us = holder.as_deref() == Some(self.identity.as_str());
        if let Some(holder) = &holder
            && !held_by_us
            && !self.observed_expired(spec.lease_duration_seconds)
        {
            tracing::trace!(%holder, "lease held by another pod");
            return Ok(false);
        }

        let mut renewed = spec.clone();
        renewed.holder_identity = Some(self.identity.clone());
        renewed.lease_duration_seconds = Some(seconds);
        renewed.renew_time = Some(now.clone());
        if !held_by_us {
            renewed.acquire_time = Some(now);
            renewed.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            if let Some(previous) = &holder {
                tracing::info!(previous = %previous, "taking over the lease from a holder that stopped renewing");
            }
        }
        let mut replacement = lease;
        replacement.spec = Some(renewed);
        // The resourceVersion read above makes this update fail with 409 if
        // another candidate wrote first.
        match call(self.action("update"), self.leases.replace(&self.name, &PostParams::default(), &replacement)).await {
            Ok(updated) => {
                self.observe(updated.spec.unwrap_or_default());
                Ok(true)
            }
            Err(error) if error.is_conflict() => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Gives the Lease up so a successor need not wait for it to expire.
    /// Clears it only while this candidate is still the holder.
    pub async fn release(&mut self) -> Result<(), KubeError> {
        let Some(mut lease) = call_optional(self.action("get"), self.leases.get(&self.name)).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else { return Ok(()) };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match call(self.action("update"), self.leases.replace(&self.name, &PostParams::default(), &lease)).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_conflict() => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn observe(&mut self, spec: LeaseSpec) {
        let changed = self.observed.as_ref().is_none_or(|(known, _)| *known != spec);
        if changed {
            self.observed = Some((spec, Instant::now()));
        }
    }

    fn observed_expired(&self, lease_duration_seconds: Option<i32>) -> bool {
        let duration = Duration::from_secs(lease_duration_seconds.unwrap_or(0).max(0) as u64);
        self.observed.as_ref().is_none_or(|(_, seen)| seen.elapsed() >= duration)
    }

    /// Campaigns until `shutdown` flips to true, publishing whether this
    /// candidate leads on `leading`. On shutdown a leader releases the Lease.
    pub async fn run(mut self, leading: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut last_renewal: Option<Instant> = None;
        loop {
            let was_leader = *leading.borrow();
            // A request that hangs (an API server that accepts but never
            // responds) must count as a failed renewal, or a stalled leader
            // would go on leading beside its successor.
            let outcome = match tokio::time::timeout(self.timing.renew_deadline, self.try_acquire_or_renew()).await {
                Ok(outcome) => outcome,
                Err(_) => Err(KubeError::Unreachable {
                    action: self.action("update"),
                    message: format!("no response within {} ms", self.timing.renew_deadline.as_millis()),
                }),
            };
            let leader_now = match outcome {
                Ok(true) => {
                    crate::logging::repeats().clear("leader election attempt failed");
                    last_renewal = Some(Instant::now());
                    true
                }
                Ok(false) => {
                    crate::logging::repeats().clear("leader election attempt failed");
                    false
                }
                Err(error) => {
                    crate::logging::repeats().warn("leader election attempt failed", &error.to_string());
                    // A leader keeps its role through failed renewals until
                    // the renew deadline, as client-go does.
                    was_leader && last_renewal.is_some_and(|at| at.elapsed() < self.timing.renew_deadline)
                }
            };
            if leader_now != was_leader {
                if leader_now {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became the leader");
                } else {
                    tracing::warn!(identity = %self.identity, lease = %self.name, "lost the leadership; stopping leader work");
                }
                let _ = leading.send(leader_now);
            }
            tokio::select! {
                _ = tokio::time::sleep(self.timing.retry_period) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                break;
            }
        }
        if *leading.borrow() {
            let _ = leading.send(false);
            match tokio::time::timeout(self.timing.renew_deadline, self.release()).await {
                Ok(Ok(())) => tracing::info!(lease = %self.name, "released the lease"),
                Ok(Err(error)) => tracing::warn!(error = %error, "failed to release the lease on shutdown"),
                Err(_) => {
                    tracing::warn!("the API server did not respond to the lease release; the lease expires on its own")
                }
            }
        }
    }
}
