//! Image garbage collection as the kubelet's image GC manager does it: every period, when
//! the image file system (the root dir's) is used past `--image-gc-high-threshold`
//! percent, images no container uses are removed, least recently used first (then first
//! detected first), skipping those detected less than `--image-minimum-gc-age` ago, until
//! its use is down to `--image-gc-low-threshold`. Removing an image drops its store records,
//! the blobs no other image needs and its unpacked snapshots no container uses.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::images::Images;

/// The image GC settings (the kubelet's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcPolicy {
    /// Use percent at which GC starts (`--image-gc-high-threshold`, 85).
    pub high_percent: u8,
    /// Use percent GC brings the file system down to (`--image-gc-low-threshold`, 80).
    pub low_percent: u8,
    /// Images detected more recently than this stay (`--image-minimum-gc-age`, 2m).
    pub min_age: Duration,
    /// How often GC looks (the kubelet's `ImageGCPeriod`, 5m; `--image-gc-period`).
    pub period: Duration,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            high_percent: 85,
            low_percent: 80,
            min_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
        }
    }
}

/// Errors of the settings or of one GC pass.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The thresholds are out of order or range (the kubelet refuses to start with them).
    #[error("invalid image GC thresholds: low {low} must be below high {high}, both at most 100")]
    Thresholds {
        /// Low threshold.
        low: u8,
        /// High threshold.
        high: u8,
    },
    /// The image file system could not be measured.
    #[error("cannot measure the image file system {path}")]
    Statvfs {
        /// The root dir.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The store or the snapshots refused.
    #[error("image store: {0}")]
    Store(String),
    /// Not enough unused images to get down to the low threshold.
    #[error(
        "Failed to garbage collect required amount of images. Attempted to free {wanted} bytes, but only found {freed} bytes eligible to free."
    )]
    NotEnough {
        /// Bytes that had to go.
        wanted: u64,
        /// Bytes that went.
        freed: u64,
    },
}

impl GcPolicy {
    /// Checks the thresholds as the kubelet does at start.
    pub fn validate(&self) -> Result<(), GcError> {
        if self.high_percent > 100 || self.low_percent >= self.high_percent {
            return Err(GcError::Thresholds {
                low: self.low_percent,
                high: self.high_percent,
            });
        }
        Ok(())
    }
}

/// How many bytes to free: `None` below the high threshold, else what brings the use to
/// the low threshold (`capacity × (100 − low) / 100 − available`).
pub fn bytes_to_free(capacity: u64, available: u64, policy: &GcPolicy) -> Option<u64> {
    if capacity == 0 {
        return None;
    }
    let available = available.min(capacity);
    let usage = 100 - (available * 100 / capacity);
    (usage >= u64::from(policy.high_percent))
        .then(|| (capacity * (100 - u64::from(policy.low_percent)) / 100).saturating_sub(available))
}

/// What the GC knows of one image (by image id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// When this agent first saw it.
    pub first_detected: Instant,
    /// When a container last used it (`None`: never seen in use).
    pub last_used: Option<Instant>,
}

/// The images to remove in order: not in use, detected at least `min_age` before `now`,
/// least recently used first (never used before used), then first detected first.
pub fn eviction_order(
    images: &HashMap<String, Tracked>,
    in_use: &HashSet<String>,
    now: Instant,
    min_age: Duration,
) -> Vec<String> {
    let mut v: Vec<(&String, &Tracked)> = images
        .iter()
        .filter(|(id, _)| !in_use.contains(*id))
        .filter(|(_, t)| now.saturating_duration_since(t.first_detected) >= min_age)
        .collect();
    v.sort_by(|a, b| {
        (a.1.last_used, a.1.first_detected, a.0).cmp(&(b.1.last_used, b.1.first_detected, b.0))
    });
    v.into_iter().map(|(id, _)| id.clone()).collect()
}

/// The image names the pods on this node use, from their run records (every container
/// the node still has, running or not, as the kubelet counts them).
pub fn images_in_use(run_dir: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let Ok(pods) = std::fs::read_dir(run_dir.join("pods")) else {
        return out;
    };
    for pod in pods.flatten() {
        let Ok(containers) = std::fs::read_dir(pod.path().join("containers")) else {
            continue;
        };
        for c in containers.flatten() {
            let Ok(runs) = std::fs::read_dir(c.path()) else {
                continue;
            };
            for run in runs.flatten() {
                let p = run.path();
                if p.extension().is_none_or(|e| e != "json") {
                    continue;
                }
                if let Some(image) = std::fs::read(&p)
                    .ok()
                    .and_then(|d| serde_json::from_slice::<crate::shim::RunRecord>(&d).ok())
                    .map(|r| r.image)
                    .filter(|i| !i.is_empty())
                {
                    out.insert(image);
                }
            }
        }
    }
    out
}

/// The GC's memory of images and the node's paths.
pub struct ImageGc {
    images: Arc<Images>,
    root_dir: std::path::PathBuf,
    run_dir: std::path::PathBuf,
    policy: GcPolicy,
    tracked: HashMap<String, Tracked>,
}

fn store_err(e: &dyn std::error::Error) -> GcError {
    GcError::Store(crate::shim::error_chain(e))
}

impl ImageGc {
    /// A GC for the node's images.
    pub fn new(images: Arc<Images>, cfg: &crate::Config) -> ImageGc {
        ImageGc {
            images,
            root_dir: cfg.root_dir.clone(),
            run_dir: cfg.run_dir.clone(),
            policy: cfg.image_gc,
            tracked: HashMap::new(),
        }
    }

    fn usage(&self) -> Result<(u64, u64), GcError> {
        let st = nix::sys::statvfs::statvfs(&self.root_dir).map_err(|source| GcError::Statvfs {
            path: self.root_dir.clone(),
            source,
        })?;
        let frag = st.fragment_size() as u64;
        Ok((
            st.blocks() as u64 * frag,
            st.blocks_available() as u64 * frag,
        ))
    }

    /// Updates what is known of the images: new ones detected, used ones touched. Returns
    /// the ids in use.
    fn detect(&mut self, now: Instant) -> Result<HashSet<String>, GcError> {
        let records = self.images.store.list_images().map_err(|e| store_err(&e))?;
        let ids: HashSet<String> = records.iter().map(|r| r.id().to_string()).collect();
        self.tracked.retain(|id, _| ids.contains(id));
        for id in &ids {
            self.tracked.entry(id.clone()).or_insert(Tracked {
                first_detected: now,
                last_used: None,
            });
        }
        let mut in_use = HashSet::new();
        for name in images_in_use(&self.run_dir) {
            let id = name
                .parse::<skiff_rootfs::reference::Reference>()
                .ok()
                .and_then(|r| self.images.store.get_image(&r.to_string()).ok().flatten())
                .map(|r| r.id().to_string());
            if let Some(id) = id {
                if let Some(t) = self.tracked.get_mut(&id) {
                    if t.last_used.is_none() {
                        tracing::info!(image = %name, id = %id, "image GC: image seen in use");
                    }
                    t.last_used = Some(now);
                }
                in_use.insert(id);
            }
        }
        Ok(in_use)
    }

    /// Removes every record of image `id`, then unreferenced blobs and snapshots.
    fn remove(&self, id: &str) -> Result<(), GcError> {
        let store = &self.images.store;
        let records = store.list_images().map_err(|e| store_err(&e))?;
        for r in records.iter().filter(|r| r.id() == id) {
            store.remove_image(&r.name).map_err(|e| store_err(&e))?;
            tracing::info!(image = %r.name, id, bytes = r.size, "unused image removed");
        }
        store.gc().map_err(|e| store_err(&e))?;
        let keep: HashSet<skiff_rootfs::digest::Digest> = store
            .list_images()
            .map_err(|e| store_err(&e))?
            .iter()
            .flat_map(|r| {
                let diffs: Vec<_> = r.layers.iter().map(|l| l.diff_id.clone()).collect();
                skiff_rootfs::snapshot::chain_ids(&diffs)
            })
            .collect();
        self.images.snaps.gc(&keep).map_err(|e| store_err(&e))?;
        Ok(())
    }

    /// One pass; returns the bytes freed.
    pub fn collect(&mut self) -> Result<u64, GcError> {
        // no pull or container start in between (they take the same lock)
        let images = self.images.clone();
        let _pulls = images.pull_lock();
        let now = Instant::now();
        let in_use = self.detect(now)?;
        let (capacity, available) = self.usage()?;
        let Some(wanted) = bytes_to_free(capacity, available, &self.policy) else {
            return Ok(0);
        };
        tracing::info!(
            usage = 100 - available * 100 / capacity.max(1),
            high = self.policy.high_percent,
            low = self.policy.low_percent,
            wanted,
            "image file system over the high threshold, removing unused images"
        );
        let mut freed = 0;
        for id in eviction_order(&self.tracked, &in_use, now, self.policy.min_age) {
            self.remove(&id)?;
            self.tracked.remove(&id);
            freed = self.usage()?.1.saturating_sub(available);
            if freed >= wanted {
                return Ok(freed);
            }
        }
        Err(GcError::NotEnough { wanted, freed })
    }

    /// Removes every unused image past the minimum age whatever the thresholds (the
    /// kubelet's `DeleteUnusedImages`, the eviction manager's reclaim); returns the bytes
    /// freed.
    pub fn delete_unused(&mut self) -> Result<u64, GcError> {
        let images = self.images.clone();
        let _pulls = images.pull_lock();
        let now = Instant::now();
        let in_use = self.detect(now)?;
        let (_, available) = self.usage()?;
        for id in eviction_order(&self.tracked, &in_use, now, self.policy.min_age) {
            self.remove(&id)?;
            self.tracked.remove(&id);
        }
        Ok(self.usage()?.1.saturating_sub(available))
    }

    /// Runs a pass every period until the task is dropped; the GC is shared with the
    /// eviction manager's reclaim.
    pub async fn run(gc: std::sync::Arc<tokio::sync::Mutex<ImageGc>>) {
        let period = gc.lock().await.policy.period;
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let g = gc.clone();
            let result =
                match tokio::task::spawn_blocking(move || g.blocking_lock().collect()).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "image GC task failed");
                        return;
                    }
                };
            match result {
                Ok(0) => {}
                Ok(freed) => tracing::info!(freed, "image garbage collection done"),
                Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        let p = GcPolicy::default();
        assert!(p.validate().is_ok());
        let gib = 1u64 << 30;
        // 84 % used: nothing; 85 %: down to 80 %
        assert_eq!(bytes_to_free(100 * gib, 16 * gib, &p), None);
        assert_eq!(bytes_to_free(100 * gib, 15 * gib, &p), Some(5 * gib));
        assert_eq!(bytes_to_free(100 * gib, 2 * gib, &p), Some(18 * gib));
        assert_eq!(bytes_to_free(0, 0, &p), None);
        // available over capacity counts as capacity
        assert_eq!(bytes_to_free(10, 20, &p), None);
        for (low, high) in [(80, 80), (90, 85), (50, 101)] {
            let bad = GcPolicy {
                low_percent: low,
                high_percent: high,
                ..p
            };
            assert!(bad.validate().is_err(), "{low} {high}");
        }
    }

    #[test]
    fn eviction_order_lru_then_detected() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let now = at(1000);
        let images: HashMap<String, Tracked> = [
            ("used-old", at(0), Some(at(100))),
            ("used-new", at(0), Some(at(900))),
            ("never-a", at(10), None),
            ("never-b", at(5), None),
            ("young", at(950), None),
            ("busy", at(0), Some(now)),
        ]
        .into_iter()
        .map(|(id, first, last)| {
            (
                id.to_string(),
                Tracked {
                    first_detected: first,
                    last_used: last,
                },
            )
        })
        .collect();
        let in_use: HashSet<String> = ["busy".to_string()].into();
        assert_eq!(
            eviction_order(&images, &in_use, now, Duration::from_secs(120)),
            vec!["never-b", "never-a", "used-old", "used-new"]
        );
        // no minimum age: the young one goes right after the other never-used ones
        assert_eq!(
            eviction_order(&images, &in_use, now, Duration::ZERO),
            vec!["never-b", "never-a", "young", "used-old", "used-new"]
        );
    }

    #[test]
    fn images_in_use_from_run_records() {
        let dir = tempfile::tempdir().unwrap();
        for (pod, c, image) in [
            ("u1", "a", "busybox:1"),
            ("u1", "b", "nginx:2"),
            ("u2", "a", "busybox:1"),
        ] {
            let rec = crate::shim::RunRecord {
                id: format!("{pod}-{c}"),
                image: image.into(),
                ..Default::default()
            };
            crate::shim::save_record(&dir.path().join("pods").join(pod), c, &rec).unwrap();
        }
        let got = images_in_use(dir.path());
        assert_eq!(got, ["busybox:1".to_string(), "nginx:2".to_string()].into());
        assert!(images_in_use(&dir.path().join("none")).is_empty());
    }
}
