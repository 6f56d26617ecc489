//! `skiff image …`: pull, import, export, list, inspect, remove and prune images in the
//! local store (skiff-rootfs).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use skiff_rootfs::archive::{self, ExportFormat};
use skiff_rootfs::pull::{PullOptions, pull};
use skiff_rootfs::reference::Reference;
use skiff_rootfs::registry::{Registry, RegistryOptions};
use skiff_rootfs::snapshot::{Snapshots, chain_ids};
use skiff_rootfs::store::{ImageRecord, Store};

/// Where images live unless `--root` says otherwise.
pub const DEFAULT_IMAGE_ROOT: &str = "/var/lib/skiff";

/// Options shared by every image command.
#[derive(Args, Debug, Clone)]
pub struct StoreArgs {
    /// Image store root.
    #[arg(long, global = true, default_value = DEFAULT_IMAGE_ROOT)]
    pub root: PathBuf,
    /// Platform to pull (os/arch[/variant]).
    #[arg(long, global = true, default_value = "linux/amd64")]
    pub platform: String,
    /// Registry allowed over plain HTTP (loopback registries always are); repeatable.
    #[arg(long = "insecure-registry", global = true)]
    pub insecure_registries: Vec<String>,
    /// Registry credentials file (docker config.json format).
    #[arg(long, global = true)]
    pub authfile: Option<PathBuf>,
}

/// `skiff image`.
#[derive(Args, Debug)]
pub struct ImageCli {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Format {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ArchiveFormat {
    OciDir,
    OciTar,
    DockerTar,
}

#[derive(Subcommand, Debug)]
enum Verb {
    /// Pull an image from a registry and unpack it.
    Pull {
        /// Image reference (busybox, localhost:5000/app:1, …@sha256:…).
        image: String,
        /// No progress bars.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Import an OCI layout (directory or tar) or a `docker save` archive.
    Import {
        /// Path of the layout or archive.
        path: PathBuf,
        /// Name for images the archive does not name.
        #[arg(long)]
        name: Option<String>,
    },
    /// Export images as an OCI layout or a docker archive.
    Export {
        /// Images to export.
        #[arg(required = true)]
        images: Vec<String>,
        /// Destination file or directory.
        #[arg(short, long)]
        output: PathBuf,
        /// Output format.
        #[arg(long, default_value = "oci-tar")]
        format: ArchiveFormat,
    },
    /// List images.
    Ls {
        /// Output format.
        #[arg(long, default_value = "table")]
        format: Format,
        /// Print only image ids.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show an image's record and config.
    Inspect {
        /// Image name or id.
        image: String,
    },
    /// Remove images (their blobs go at the next prune).
    Rm {
        /// Images to remove.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove blobs and snapshots no image uses.
    Prune,
}

/// Installs rustls' ring provider once (the registry client needs one).
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl StoreArgs {
    /// Opens the content store and the snapshots under the root.
    pub fn open(&self) -> Result<(Store, Snapshots)> {
        let store = Store::open(&self.root)
            .with_context(|| format!("cannot open image store {}", self.root.display()))?;
        let snaps = Snapshots::open(&self.root)
            .with_context(|| format!("cannot open snapshots in {}", self.root.display()))?;
        Ok((store, snaps))
    }

    fn registry(&self) -> Registry {
        Registry::new(RegistryOptions {
            insecure_registries: self.insecure_registries.clone(),
            auth_file: self.authfile.clone(),
            platform: self.platform.clone(),
            ..RegistryOptions::default()
        })
    }

    /// Pulls `image` on a single-threaded runtime that is fully shut down afterwards, so the
    /// process is single-threaded again when it forks containers.
    pub fn pull(
        &self,
        store: &Store,
        snaps: &Snapshots,
        image: &str,
        quiet: bool,
    ) -> Result<ImageRecord> {
        init_tls();
        let reference: Reference = image.parse()?;
        let registry = self.registry();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let opts = PullOptions {
            progress: !quiet,
            ..PullOptions::default()
        };
        let result = rt.block_on(pull(store, snaps, &registry, &reference, &opts));
        drop(registry);
        rt.shutdown_timeout(std::time::Duration::from_secs(5));
        result.with_context(|| format!("cannot pull {reference}"))
    }
}

/// Finds an image by name (normalised) or id prefix.
pub fn find(store: &Store, name: &str) -> Result<Option<ImageRecord>> {
    if let Some(r) = store.get_image(name)? {
        return Ok(Some(r));
    }
    if let Ok(reference) = name.parse::<Reference>() {
        return Ok(store.get_image(&reference.to_string())?);
    }
    Ok(None)
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// Runs `skiff image …`.
pub fn main(cli: ImageCli) -> Result<i32> {
    let (store, snaps) = cli.store.open()?;
    match cli.verb {
        Verb::Pull { image, quiet } => {
            let rec = cli.store.pull(&store, &snaps, &image, quiet)?;
            outln!("{}", rec.name);
            outln!("sha256:{}", rec.id());
        }
        Verb::Import { path, name } => {
            let name = name.map(|n| n.parse::<Reference>()).transpose()?;
            let recs = archive::import_platform(&store, &path, name.as_ref(), &cli.store.platform)
                .with_context(|| format!("cannot import {}", path.display()))?;
            for (i, rec) in recs.iter().enumerate() {
                if let Err(e) = skiff_rootfs::pull::unpack_image(&store, &snaps, rec) {
                    // an image whose layers cannot be unpacked is not kept (nor those after it)
                    for r in &recs[i..] {
                        let _ = store.remove_image(&r.name);
                    }
                    return Err(e).with_context(|| format!("cannot unpack image {}", rec.name));
                }
                outln!("{}", rec.name);
            }
        }
        Verb::Export {
            images,
            output,
            format,
        } => {
            let names: Vec<String> = images
                .iter()
                .map(|i| {
                    Ok(find(&store, i)?
                        .with_context(|| format!("image {i} not found"))?
                        .name)
                })
                .collect::<Result<_>>()?;
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let format = match format {
                ArchiveFormat::OciDir => ExportFormat::OciDir,
                ArchiveFormat::OciTar => ExportFormat::OciTar,
                ArchiveFormat::DockerTar => ExportFormat::DockerTar,
            };
            archive::export(&store, &refs, &output, format)
                .with_context(|| format!("cannot export to {}", output.display()))?;
        }
        Verb::Ls { format, quiet } => {
            let images = store.list_images()?;
            if quiet {
                for i in &images {
                    outln!("{}", &i.id()[..12.min(i.id().len())]);
                }
            } else if format == Format::Json {
                outln!("{}", serde_json::to_string(&images)?);
            } else {
                outln!(
                    "{:<50} {:<14} {:<12} {:>10}",
                    "IMAGE",
                    "ID",
                    "PLATFORM",
                    "SIZE"
                );
                for i in &images {
                    outln!(
                        "{:<50} {:<14} {:<12} {:>10}",
                        i.name,
                        &i.id()[..12.min(i.id().len())],
                        i.platform,
                        human(i.size)
                    );
                }
            }
        }
        Verb::Inspect { image } => {
            let rec = find(&store, &image)?.with_context(|| format!("image {image} not found"))?;
            let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&rec.config)?)?;
            let v = serde_json::json!({"record": rec, "config": config});
            outln!("{}", serde_json::to_string_pretty(&v)?);
        }
        Verb::Rm { images } => {
            for i in images {
                let rec = find(&store, &i)?.with_context(|| format!("image {i} not found"))?;
                store.remove_image(&rec.name)?;
                outln!("Untagged: {}", rec.name);
            }
        }
        Verb::Prune => {
            // the snapshots' gc under the store's lock too: a pull in another process
            // cannot record an image (whose layers it then unpacks) between the list of
            // images and the snapshots' removal
            let (report, snaps_removed) = store.gc_then(|store| -> Result<usize> {
                let mut keep = std::collections::HashSet::new();
                for rec in store.list_images()? {
                    let diff: Vec<_> = rec.layers.iter().map(|l| l.diff_id.clone()).collect();
                    keep.extend(chain_ids(&diff));
                }
                Ok(snaps.gc(&keep)?)
            })?;
            outln!(
                "removed {} blobs ({}) and {} snapshots",
                report.blobs.len(),
                human(report.bytes()),
                snaps_removed
            );
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1500), "1.5kB");
        assert_eq!(human(2_000_000), "2.0MB");
    }
}
