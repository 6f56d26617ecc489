//! `skiff agent`'s node-pressure eviction flags, as the kubelet's.

use anyhow::Result;
use clap::Args;

/// Node-pressure eviction, as the kubelet's flags.
#[derive(Args, Debug, Clone)]
pub struct EvictionArgs {
    /// Hard eviction thresholds: pods are killed at once when a signal goes below
    /// (`memory.available<100Mi,nodefs.available<10%`; "" for none).
    #[arg(long, default_value = skiff_agent::eviction::DEFAULT_HARD)]
    eviction_hard: String,
    /// Soft eviction thresholds, acted on once met for their grace period.
    #[arg(long, default_value = "")]
    eviction_soft: String,
    /// Grace periods of the soft thresholds (`memory.available=1m30s`).
    #[arg(long, default_value = "")]
    eviction_soft_grace_period: String,
    /// Once a threshold is met, reclaim (images, then pods) until the signal is this much
    /// above it (`memory.available=0Mi,nodefs.available=500Mi`, or percentages).
    #[arg(long, default_value = "")]
    eviction_minimum_reclaim: String,
    /// How long a pressure condition stays after its last threshold was met.
    #[arg(long, default_value = "5m", value_parser = crate::master_cmd::parse_duration)]
    eviction_pressure_transition_period: std::time::Duration,
    /// How often the eviction manager measures the node (the kubelet's fixed 10s).
    #[arg(long, default_value = "10s", value_parser = crate::master_cmd::parse_duration)]
    eviction_monitoring_period: std::time::Duration,
}

impl EvictionArgs {
    /// The agent's policy from the flags.
    pub fn policy(&self) -> Result<skiff_agent::eviction::EvictionPolicy> {
        Ok(skiff_agent::eviction::EvictionPolicy::new(
            &self.eviction_hard,
            &self.eviction_soft,
            &self.eviction_soft_grace_period,
            &self.eviction_minimum_reclaim,
            self.eviction_pressure_transition_period,
            self.eviction_monitoring_period
                .max(std::time::Duration::from_secs(1)),
        )?)
    }
}
