//! Pulling an image into the store: resolve the reference, store manifest (and index),
//! fetch the config and the missing layers concurrently (resuming partial downloads),
//! verify every blob, unpack the layers into snapshots, and record the image.
//!
//! A pull killed at any point leaves the store consistent: blobs appear only complete and
//! verified, partial downloads are resumed by the next pull, and the image record is
//! written last.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{self, StreamExt, TryStreamExt};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use oci_spec::image::{ImageConfiguration, ImageManifest};

use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{Registry, RegistryError};
use crate::snapshot::{SnapshotError, Snapshots, chain_ids};
use crate::store::{ImageRecord, LayerRecord, Store, StoreError};

/// Errors of a pull.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Talking to the registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store refused a blob or record.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Unpacking a layer failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A manifest or config is not valid JSON of its type.
    #[error("invalid {what} {digest} of {reference}")]
    Invalid {
        /// "manifest" or "image config".
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// The image.
        reference: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest and config disagree (layer count vs diff_ids) or use bad digests.
    #[error("image {reference} is inconsistent: {reason}")]
    Inconsistent {
        /// The image.
        reference: String,
        /// What does not add up.
        reason: String,
    },
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Layers downloaded at the same time.
    pub concurrency: usize,
    /// Draw progress bars (only when stderr is a terminal).
    pub progress: bool,
    /// Unpack the layers into snapshots after download.
    pub unpack: bool,
    /// Attempts per blob for transient registry errors (resuming each time).
    pub attempts: u32,
}

impl Default for PullOptions {
    fn default() -> PullOptions {
        PullOptions {
            concurrency: 3,
            progress: true,
            unpack: true,
            attempts: 3,
        }
    }
}

/// Adapts a blocking `Write` (a store ingest on local disk) to `AsyncWrite`: local file
/// writes are short, so they run inline.
struct Blocking<W>(W);

impl<W: Write + Unpin> tokio::io::AsyncWrite for Blocking<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.0.write(buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(self.0.flush())
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    digest: &Digest,
    reference: &Reference,
    data: &[u8],
) -> Result<T, PullError> {
    serde_json::from_slice(data).map_err(|source| PullError::Invalid {
        what,
        digest: digest.clone(),
        reference: reference.to_string(),
        source,
    })
}

fn digest_of(d: &oci_spec::image::Digest, reference: &Reference) -> Result<Digest, PullError> {
    d.to_string()
        .parse()
        .map_err(|e: crate::digest::DigestError| PullError::Inconsistent {
            reference: reference.to_string(),
            reason: e.to_string(),
        })
}

/// Progress display: one bar per blob and a total, or nothing.
struct Progress {
    multi: Option<MultiProgress>,
    total: Option<ProgressBar>,
}

impl Progress {
    fn new(enabled: bool, total_bytes: u64) -> Progress {
        if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Progress {
                multi: None,
                total: None,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let total = multi.add(ProgressBar::new(total_bytes));
        total.set_style(
            ProgressStyle::with_template(
                "{prefix:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        total.set_prefix("total");
        Progress {
            multi: Some(multi),
            total: Some(total),
        }
    }

    fn bar(&self, name: &str, size: u64) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let bar = multi.insert_from_back(1, ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes}/{total_bytes}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        Some(bar)
    }
}

/// Pulls `reference` into `store` (and unpacks it into `snapshots`); returns its record.
pub async fn pull(
    store: &Store,
    snapshots: &Snapshots,
    registry: &Registry,
    reference: &Reference,
    opts: &PullOptions,
) -> Result<ImageRecord, PullError> {
    let _lease = store.lease()?;
    let resolved = registry.resolve(reference).await?;
    if let Some((d, bytes)) = &resolved.index {
        store.write_blob(d, bytes)?;
    }
    store.write_blob(&resolved.manifest_digest, &resolved.manifest)?;
    let manifest: ImageManifest = parse(
        "manifest",
        &resolved.manifest_digest,
        reference,
        &resolved.manifest,
    )?;
    let config_digest = digest_of(manifest.config().digest(), reference)?;
    let config_size = manifest.config().size();
    if !store.has_blob(&config_digest) {
        let mut ingest = store.ingest(&config_digest, Some(config_size))?;
        let offset = ingest.offset();
        let result = {
            let mut w = Blocking(&mut ingest);
            registry
                .fetch_blob(
                    reference,
                    &config_digest,
                    config_size,
                    offset,
                    &mut w,
                    &|_| {},
                )
                .await
        };
        if let Err(e) = result {
            if content_is_wrong(&e) {
                ingest.abort();
            }
            return Err(e.into());
        }
        ingest.commit()?;
    }
    let config: ImageConfiguration = parse(
        "image config",
        &config_digest,
        reference,
        &store.read_blob(&config_digest)?,
    )?;
    let diff_ids: Vec<Digest> = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            d.parse()
                .map_err(|e: crate::digest::DigestError| PullError::Inconsistent {
                    reference: reference.to_string(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(PullError::Inconsistent {
            reference: reference.to_string(),
            reason: format!(
                "{} layers in the manifest but {} diff_ids in the config",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers().iter().zip(&diff_ids) {
        layers.push(LayerRecord {
            digest: digest_of(l.digest(), reference)?,
            media_type: l.media_type().to_string(),
            size: l.size(),
            diff_id: diff_id.clone(),
        });
    }
    let missing: Vec<&LayerRecord> = layers
        .iter()
        .filter(|l| !store.has_blob(&l.digest))
        .collect();
    let progress = Arc::new(Progress::new(
        opts.progress,
        missing.iter().map(|l| l.size).sum(),
    ));
    stream::iter(missing.into_iter().map(|layer| {
        let progress = Arc::clone(&progress);
        async move { fetch_layer(store, registry, reference, layer, &progress, opts.attempts).await }
    }))
    .buffer_unordered(opts.concurrency.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    if let Some(t) = &progress.total {
        t.finish_and_clear();
    }
    let record = ImageRecord {
        name: reference.to_string(),
        manifest: resolved.manifest_digest.clone(),
        index: resolved.index.as_ref().map(|(d, _)| d.clone()),
        config: config_digest,
        layers,
        platform: format!("{}/{}", config.os(), config.architecture()),
        created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        size: config_size + manifest.layers().iter().map(|l| l.size()).sum::<u64>(),
    };
    if opts.unpack {
        // the downloads are done: nothing else runs on this task while layers unpack
        unpack_image(store, snapshots, &record)?;
    }
    // last, so that an image whose layers cannot be unpacked is not listed
    store.put_image(&record)?;
    tracing::info!(image = %record.name, id = %record.id(), "image stored");
    Ok(record)
}

async fn fetch_layer(
    store: &Store,
    registry: &Registry,
    reference: &Reference,
    layer: &LayerRecord,
    progress: &Progress,
    attempts: u32,
) -> Result<(), PullError> {
    let short = layer
        .digest
        .hex()
        .get(..12)
        .unwrap_or(layer.digest.hex())
        .to_string();
    let bar = progress.bar(&short, layer.size);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut ingest = store.ingest(&layer.digest, Some(layer.size))?;
        let offset = ingest.offset();
        let before = progress.total.as_ref().map(|t| t.position()).unwrap_or(0);
        let report = |n: u64| {
            if let Some(b) = &bar {
                b.set_position(n);
            }
            if let Some(t) = &progress.total {
                t.set_position(before + n.saturating_sub(offset));
            }
        };
        let result = {
            let mut w = Blocking(&mut ingest);
            registry
                .fetch_blob(
                    reference,
                    &layer.digest,
                    layer.size,
                    offset,
                    &mut w,
                    &report,
                )
                .await
        };
        match result {
            Ok(()) => {
                // commit checks size and digest; a mismatch removes the partial file
                ingest.commit()?;
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                tracing::info!(layer = %layer.digest, size = layer.size, "layer downloaded");
                return Ok(());
            }
            Err(e) if e.is_transient() && attempt < attempts => {
                tracing::warn!(layer = %layer.digest, error = %e, attempt, "retrying download");
                drop(ingest); // keeps the partial file for the resume
            }
            Err(e) => {
                if content_is_wrong(&e) {
                    ingest.abort();
                }
                return Err(e.into());
            }
        }
    }
}

/// Whether a failed download received bytes that are not the blob's (a whole blob hashing to
/// something else, more bytes than the descriptor says): the partial file is then useless
/// for a resume, and kept it would fail the next pull without asking the registry again.
fn content_is_wrong(e: &RegistryError) -> bool {
    match e {
        RegistryError::BlobDigest { .. } => true,
        RegistryError::BlobSize {
            expected, actual, ..
        } => actual > expected,
        _ => false,
    }
}

/// Unpacks every layer of `record` that has no snapshot yet (base first).
pub fn unpack_image(
    store: &Store,
    snapshots: &Snapshots,
    record: &ImageRecord,
) -> Result<Vec<Digest>, PullError> {
    let diff_ids: Vec<Digest> = record.layers.iter().map(|l| l.diff_id.clone()).collect();
    let chain = chain_ids(&diff_ids);
    for (layer, chain_id) in record.layers.iter().zip(&chain) {
        if snapshots.has(chain_id) {
            continue;
        }
        let blob = store.open_blob(&layer.digest)?;
        snapshots.unpack(
            chain_id,
            &layer.diff_id,
            &layer.media_type,
            blob,
            &layer.digest.to_string(),
        )?;
    }
    Ok(chain)
}
