//! Work inside a network namespace: a dedicated thread joins it with `setns` (which changes
//! only the calling thread), so the caller's own namespace is never touched. Netlink sockets
//! and child processes made on that thread belong to the joined namespace.

use std::fs::File;
use std::future::Future;
use std::path::Path;

use nix::sched::CloneFlags;
use rtnetlink::Handle;

use super::{Error, Result};

/// A handle on a network namespace (an open nsfs file).
#[derive(Debug)]
pub struct Netns {
    file: File,
    label: String,
}

impl Netns {
    /// The namespace bound at `path` (e.g. `/run/netns/NAME` or a pod's bind mount).
    pub fn open(path: &Path) -> Result<Netns> {
        let file = File::open(path).map_err(|source| Error::Io {
            what: "open network namespace",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Netns {
            file,
            label: path.display().to_string(),
        })
    }

    /// The calling thread's namespace.
    pub fn current() -> Result<Netns> {
        Netns::open(Path::new("/proc/thread-self/ns/net"))
    }

    /// The open file (for `IFLA_NET_NS_FD`).
    pub fn file(&self) -> &File {
        &self.file
    }

    fn try_clone(&self) -> Result<Netns> {
        Ok(Netns {
            file: self.file.try_clone().map_err(|source| Error::Io {
                what: "duplicate",
                path: self.label.clone().into(),
                source,
            })?,
            label: self.label.clone(),
        })
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let ns = self.try_clone()?;
        std::thread::Builder::new()
            .name("skiff-netns".into())
            .spawn(move || {
                nix::sched::setns(&ns.file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                    Error::Setns {
                        netns: ns.label.clone(),
                        source,
                    }
                })?;
                f()
            })
            .map_err(|source| Error::Io {
                what: "spawn a thread for",
                path: self.label.clone().into(),
                source,
            })?
            .join()
            .map_err(|_| Error::Thread)?
    }

    /// Runs the netlink conversation `f` inside this namespace (a rtnetlink connection made
    /// on a thread that joined it, driven by a current-thread runtime).
    pub fn netlink<T, F, Fut>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Handle) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T>>,
    {
        let label = self.label.clone();
        self.run(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|source| Error::Io {
                    what: "start a netlink runtime in",
                    path: label.clone().into(),
                    source,
                })?;
            rt.block_on(async move {
                let (conn, handle, _) =
                    rtnetlink::new_connection().map_err(|source| Error::Io {
                        what: "open a netlink socket in",
                        path: label.into(),
                        source,
                    })?;
                let task = tokio::spawn(conn);
                let r = f(handle).await;
                task.abort();
                r
            })
        })
    }
}
